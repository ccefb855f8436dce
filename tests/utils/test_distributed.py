"""How torchrun ranks pick their process-group backend and their GPU (sta.utils.distributed)."""

from sta.utils.distributed import process_group_backend, rank_device


def test_nccl_only_when_every_local_rank_has_its_own_gpu():
    assert process_group_backend("cuda", local_world=2, gpus=2) == "nccl"
    assert process_group_backend("cuda", local_world=2, gpus=1) == "gloo"  # NCCL refuses two ranks on one GPU
    assert process_group_backend("cpu", local_world=2, gpus=8) == "gloo"
    assert process_group_backend("cuda:0", local_world=1, gpus=1) == "nccl"


def test_ranks_spread_over_the_gpus_and_keep_an_explicit_one():
    assert [rank_device("cuda", rank, gpus=2) for rank in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert rank_device("cuda", 1, gpus=1) == "cuda:0"
    assert rank_device("cuda:1", 0, gpus=2) == "cuda:1"
    assert rank_device("cpu", 3, gpus=0) == "cpu"
