"""Saved types by name: what :func:`~icl_lens.core.results.load_result` can rebuild.

Kept apart from :mod:`icl_lens.core.results` (which needs torch) so that light modules,
such as task loading, register their dataclasses without importing torch.
"""

from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a dataclass known to :func:`~icl_lens.core.results.load_result` (by class name)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered(name: str) -> type | None:
    """The registered class called ``name``, importing icl_lens's modules first if it is not known yet.

    ``import icl_lens`` imports its modules on first use (:mod:`icl_lens.core.lazy`), so a
    result type may not be registered yet when a file that holds it is loaded.
    """
    if name not in _REGISTRY:
        from icl_lens.core.lazy import import_everything

        import_everything()
    return _REGISTRY.get(name)
