"""hvqc: a hierarchical VQ-VAE image codec with learned priors and real entropy-coded files.

``hvqc.compress(image, model=..., level=...) -> bytes`` and ``hvqc.decompress(data) ->
PIL.Image``; see :mod:`hvqc.api`. Imported lazily so that ``import hvqc`` stays cheap.
"""
__version__ = "0.1.0"
__all__ = ["compress", "decompress", "describe"]


def __getattr__(name):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'hvqc' has no attribute {name!r}")
