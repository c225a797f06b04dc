"""HTTP edge: Starlette routes that parse, call one use case, and render (thin by design)."""
