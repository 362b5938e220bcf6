"""Small splits for the pruning and Fisher tests."""

import torch


def split_of(texts, n_concepts=3, seed=0):
    from sparsecbm.data import Split

    g = torch.Generator().manual_seed(seed)
    return Split(tuple(texts), torch.randint(3, (len(texts),), generator=g).numpy(),
                 torch.randint(3, (len(texts), n_concepts), generator=g).numpy())


TEXTS = ("the food was cold", "a quiet room and kind staff who smiled a lot", "prices fine",
         "the soup was awful but the waiter was lovely and quick", "ok", "noisy , slow and far too expensive")
