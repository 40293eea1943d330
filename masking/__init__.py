"""ticketlab's masking core: mask criteria, iterative pruning, mask-1/mask-0 treatments, masked and Supermask
layers, and the paper's networks. Plain PyTorch: no Sacred, no database.

    from masking import criteria, treatments
    criteria.next_mask("large_final", w_init, w_final, mask, 0.2, generator)
"""

from masking import criteria, evaluation, hashing, initializers, layers, models, pruning, rng, supermask, treatments
from masking import resnet  # the architecture families beside models' plain nets: each registers itself

__all__ = ["criteria", "evaluation", "hashing", "initializers", "layers", "models", "pruning", "resnet", "rng",
           "supermask", "treatments"]
