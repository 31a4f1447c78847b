"""facesync: keep a Baidu Face V3 face library equal to a YAML manifest kept in git.

The flow, one direction: manifest → (resolve, refresh) → plan → apply, with the face-library
targets (``api/`` over HTTP, ``local/`` on SQLite) underneath.
"""

__version__ = "0.1.0"
