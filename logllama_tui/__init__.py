"""logllama: terminal log triage with a small LLaMA that learns what normal looks like."""

__version__ = "0.1.0"
