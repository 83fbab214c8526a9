"""The allocator switch of the CPU solvers: same results, no page faults for reused large temporaries."""
import pytest
import resource
import torch

from defocusgan_plugin.ops.dp_joint import DPJointSolver
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank
from defocusgan_plugin.utils.heap import glibc, heap_reuse

needs_glibc = pytest.mark.skipif(glibc() is None, reason='mallopt is glibc-only')


def faults_of_second_allocation():
    """Minor page faults of a 64 MB tensor filled right after an equal one was freed."""
    torch.ones(16 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@needs_glibc
def test_freed_memory_is_reused_inside_the_block():
    pages = (64 << 20) // 4096
    with heap_reuse() as switched, heap_reuse():  # nested blocks keep the switch until the outer one ends
        assert switched
        # the first cycles may land on heap pages not touched yet (or handed back by an earlier malloc_trim)
        inside = min(faults_of_second_allocation() for _ in range(5))
    assert inside < 0.1 * pages, inside  # the freed block came back from the heap, its pages still mapped
    # (after the block glibc's defaults are back; whether a block then comes from the heap or from fresh pages
    # depends on what the heap holds, so it is not asserted)
    with heap_reuse(enabled=False) as switched:
        assert not switched


def test_solver_results_do_not_depend_on_the_allocator():
    torch.manual_seed(0)
    left, right = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48)
    bank = ParametricKernelBank()
    on, off = (DPJointSolver(bank, preset='fast', max_radius=4, heap_reuse=flag)(left, right) for flag in (True, False))
    assert torch.equal(on['aif'], off['aif']) and torch.equal(on['defocus'], off['defocus'])
