"""JSON Schemas of facesync's files, shipped inside the package as ``facesync.schemas``."""
import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def load(name: str) -> dict:
    """The schema ``name`` (e.g. ``"manifest"`` for manifest.schema.json) as a dict."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8"))
