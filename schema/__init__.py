"""Strawberry types and the schema built from them."""

from schema.build import SDL_PATH, build_schema, export_sdl

__all__ = ["SDL_PATH", "build_schema", "export_sdl"]
