"""Client-side services the Collection facade delegates to (models, watchers)."""
