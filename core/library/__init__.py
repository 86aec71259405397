"""Filing results into a Jellyfin library: layout (pure), client, filing."""
