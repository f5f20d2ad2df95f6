"""Operations: metrics, the health server, logging, memory policy."""
