"""Build: the Dockerfile language, .dockerignore (the front half; the engine that runs steps comes next)."""
