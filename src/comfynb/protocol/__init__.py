"""Layer 1, pure wire: ComfyUI's HTTP calls, flows and parsers (``calls``) and its WebSocket events (``events``); no I/O."""
