{{/* Names, labels and the rendered daemon configuration. */}}

{{- define "skystream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skystream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "skystream.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "skystream.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "skystream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skystream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
app.kubernetes.io/part-of is constant whatever the release's names: the ServiceMonitor copies
it onto every scraped series (targetLabels) and the alert rules select on it.
*/}}
{{- define "skystream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "skystream.selectorLabels" . }}
app.kubernetes.io/part-of: skystream
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image: pinned by digest when image.digest is set, else by tag. */}}
{{- define "skystream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
"true" when an API group/version can be used: the cluster has it (helm install/upgrade), or
apiVersions lists it (helm template, GitOps tools that render without a cluster).
Usage: include "skystream.hasApi" (dict "root" . "api" "monitoring.coreos.com/v1")
*/}}
{{- define "skystream.hasApi" -}}
{{- if or (.root.Capabilities.APIVersions.Has .api) (has .api .root.Values.apiVersions) }}true{{ end }}
{{- end }}

{{/* Where the state folder lives: the StatefulSet's claims, a PVC, or an emptyDir. */}}
{{- define "skystream.stateClaim" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else }}
{{- printf "%s-state" (include "skystream.fullname" .) }}
{{- end }}
{{- end }}

{{- define "skystream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "skystream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the SASL password and the CA bundle are mounted. */}}
{{- define "skystream.secretsDir" -}}/var/run/secrets/skystream{{- end }}

{{/*
The daemon's YAML: values.config, with what the chart owns laid over it (the health port
the probes use, the state folder, and the Kafka connection from kafka.*).
*/}}
{{- define "skystream.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $owned := dict "metrics" (dict "enabled" true "host" "0.0.0.0" "port" (int .Values.service.port)) "state" (dict "directory" "/var/lib/skystream") }}
{{- if .Values.kafka.enabled }}
{{- $k := .Values.kafka }}
{{- $security := dict "protocol" $k.securityProtocol "ssl_check_hostname" $k.tls.checkHostname }}
{{- if hasPrefix "SASL" $k.securityProtocol }}
{{- $_ := set $security "sasl_mechanism" $k.sasl.mechanism }}
{{- $_ := set $security "username" $k.sasl.username }}
{{- $_ := set $security "password_file" (printf "%s/kafka-password/%s" (include "skystream.secretsDir" .) $k.sasl.passwordSecret.key) }}
{{- end }}
{{- if $k.tls.caSecret.name }}
{{- $_ := set $security "ssl_cafile" (printf "%s/kafka-ca/%s" (include "skystream.secretsDir" .) $k.tls.caSecret.key) }}
{{- end }}
{{- $kafka := dict "bootstrap_servers" $k.bootstrapServers "topic" $k.topic "group_id" $k.groupId "dead_letter_topic" $k.deadLetterTopic "state_topic" (default nil $k.stateTopic) "allowed_roots" $k.allowedRoots "security" $security }}
{{- $_ := set $owned "source" (dict "kind" "kafka" "kafka" $kafka) }}
{{- $_ := set $owned "output" (dict "product_topic" (default nil $k.productTopic) "skymatch_topic" (default nil $k.skymatchTopic)) }}
{{- end }}
{{- toYaml (mergeOverwrite $config $owned) }}
{{- end }}

{{- define "skystream.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $grace := 30 }}
{{- if and .Values.config.shutdown (hasKey .Values.config.shutdown "grace_seconds") }}
{{- $grace = .Values.config.shutdown.grace_seconds }}
{{- end }}
{{- add (ceil $grace) 15 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
