"""Shared build caches for CI (`--cache-to` / `--cache-from`): step records and their layers in a registry, an OCI
layout directory or an image's config. format.py documents the format; session.py is what a build talks to."""
