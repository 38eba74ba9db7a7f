"""The JSON form ``{"class_name": ..., "config": {...}}`` that losses, metrics and optimizers share."""
from __future__ import annotations


def serialized(obj) -> dict:
    """``obj`` as ``{"class_name": its class's name, "config": obj.get_config()}``."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def class_and_config(config, what: str):
    """``(class_name, config dict)`` of a serialized object; ValueError naming ``what`` otherwise."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"cannot deserialize {what} from {config!r}: expected a name or a dict with "
                         f"'class_name' and 'config'")
    return config["class_name"], dict(config.get("config") or {})
