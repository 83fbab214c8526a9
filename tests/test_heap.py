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
def test_freed_memory_is_reused_inside_the_block_only():
    pages = (64 << 20) // 4096
    with heap_reuse() as switched, heap_reuse():  # nested blocks keep the switch until the outer one ends
        assert switched
        faults_of_second_allocation()  # the first cycle grows the heap
        inside = faults_of_second_allocation()
    outside = faults_of_second_allocation()
    assert inside < 0.1 * pages, inside  # the freed block came back from the heap
    assert outside > 0.5 * pages, outside  # glibc's defaults again: fresh pages from the kernel
    with heap_reuse(enabled=False) as switched:
        assert not switched


def test_solver_results_do_not_depend_on_the_allocator():
    torch.manual_seed(0)
    left, right = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48)
    bank = ParametricKernelBank()
    on, off = (DPJointSolver(bank, preset='fast', max_radius=4, heap_reuse=flag)(left, right) for flag in (True, False))
    assert torch.equal(on['aif'], off['aif']) and torch.equal(on['defocus'], off['defocus'])
