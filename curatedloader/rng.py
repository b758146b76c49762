"""Seeds: every random stream of the loader derives from the one `seed`."""
from __future__ import annotations

import numpy as np
import torch


def derive_seed(*words: int) -> int:
    """A 63-bit seed from integers (seed, epoch, rank, purpose...); streams for other words are independent.

    >>> derive_seed(0, 1) != derive_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([w % 2**64 for w in words]).generate_state(2, np.uint64)[0] >> 1)


def generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """`generator` itself for the CPU; elsewhere a device generator seeded by one draw from it, so noise
    is made where it is used while the CPU generator (saved in state_dict) still holds all the state."""
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.Generator(device).manual_seed(seed)
