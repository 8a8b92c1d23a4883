"""appsight."""
