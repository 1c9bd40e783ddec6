"""Flowified layers in the *density* direction: ``forward`` maps data ``x`` to a code ``y``.

Every layer here is a :class:`~pyro_flowvi.transforms.flowify.FlowifiedLayer` (not a
``TransformModule``): ``layer(x)`` returns ``(y, C)`` with SurVAE's sign,
:math:`\\log p_{in}(x) = \\log p_{out}(y) + C` (exact layers; a lower bound for
dimension-increasing ones), and ``layer.inverse(y)`` is the (possibly stochastic) sampling
direction.  :class:`~pyro_flowvi.transforms.flowify.FlowifiedSequential` composes layers by
summing their contributions and :class:`~pyro_flowvi.transforms.flowify.FlowifiedDistribution`
turns a net into a Pyro distribution.  The sampling-direction transforms built from these layers
are in :mod:`pyro_flowvi.transforms.flowify.sampling`; every public name is importable from
:mod:`pyro_flowvi.transforms.flowify`.
"""

__all__: list[str] = []
