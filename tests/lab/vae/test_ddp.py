"""DistributedDataParallel: 2 CPU processes (gloo, loopback) average their gradients, so their
first update equals a 1-process update on the concatenated batch."""

import os
import socket

import pyro
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from pyro import poutine

from pyro_flowvi import AmortizedFlowGuide
from pyro_flowvi.lab.vae import build_vae
from pyro_flowvi.lab.vae.train import ELBOModule, distributed_context, train_step

B, LATENT, N = 8, 3, 16  # per-rank batch, latent size, "data set" = the two batches


def problem():
    """Seeded weights, 2B images and fixed latents (the ELBO is then deterministic)."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    pyro.clear_param_store()
    vae, enc = build_vae("mlp", LATENT, 6, [16])
    guide = AmortizedFlowGuide(vae.model, enc, arch="realnvp", num_layers=2, hidden_dims=[8],
                               create_plates=vae.create_plates)
    x = (torch.rand(2 * B, 784) < 0.3).double()
    z = torch.randn(2 * B, LATENT)
    guide(x[:2])
    return vae, guide, x, z


def fixed_latent(guide, z, *args, **kwargs):
    """The guide with its draw replaced by ``z`` (still a latent site, scored by ``log q``)."""
    trace = poutine.trace(guide).get_trace(*args, **kwargs)
    trace.nodes["z"]["value"] = z
    return poutine.replay(guide, trace=trace)


def one_update(rank, world):
    vae, guide, x, z = problem()
    rows = slice(rank * B, (rank + 1) * B) if world > 1 else slice(None)
    index = torch.arange(2 * B)[rows]
    fixed = fixed_latent(guide, z[rows], x[rows], num_data=N, index=index)
    module = ELBOModule(vae, guide, fixed)
    wrapped = torch.nn.parallel.DistributedDataParallel(module) if world > 1 else module
    opt = torch.optim.SGD(module.parameters(), lr=0.05)  # SGD: the update is the gradient
    train_step(wrapped, opt, x[rows], N, 1.0, index)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    got_rank, got_world, _ = distributed_context(torch.device("cpu"))
    assert (got_rank, got_world) == (rank, world) and tdist.get_backend() == "gloo"
    state = one_update(rank, world)
    if rank == 0:
        torch.save(state, path)
    tdist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_average_gradients(tmp_path):
    path = tmp_path / "rank0.pt"
    # free_port() can race with another process grabbing the port before gloo binds it: retry
    # with a fresh port (a real failure fails every attempt and is re-raised).
    for attempt in range(3):
        try:
            mp.spawn(worker, args=(2, free_port(), str(path)), nprocs=2, join=True)
            break
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            if attempt == 2:
                raise
    two = torch.load(path)
    old = torch.get_default_dtype()
    try:
        one = one_update(0, 1)
        torch.set_default_dtype(old)
        vae, guide, x, z = problem()
        start = ELBOModule(vae, guide).state_dict()
    finally:
        torch.set_default_dtype(old)
    moved = 0
    for key, value in one.items():
        assert torch.allclose(two[key], value, rtol=1e-10, atol=1e-12), key
        moved += int(not torch.equal(value, start[key]))
    assert moved > 10  # the update did change the parameters
