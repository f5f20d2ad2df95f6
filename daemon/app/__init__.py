"""The application: settings, the service that wires the layers, the command line, the demo."""
