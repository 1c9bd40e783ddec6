"""Flowified pieces as transforms in the *sampling* direction: ``forward`` maps a base draw to a
latent, as for every :class:`~pyro_flowvi.transforms.base.FlowTransform`.

``log|det J|`` is that of the forward (sampling) map, so ``log q(z) = log N(e) - log|det J|``
(``docs/conventions.rst``).  :class:`~pyro_flowvi.transforms.flowify.FlowifiedBijection` wraps a
non-increasing net of density-direction layers (:mod:`pyro_flowvi.transforms.flowify.density`) as
such a bijection, and :func:`~pyro_flowvi.transforms.flowify.flowified_flow` is the registry's
``"flowified"`` architecture.  Every public name is importable from
:mod:`pyro_flowvi.transforms.flowify`.
"""

__all__: list[str] = []
