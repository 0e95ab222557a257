import json

import numpy
import torch

from posttrain.utils.machine import RESULT_LIBRARIES, cpu_name, library_versions, machine_info


def test_machine_info_names_the_cpu_and_the_installed_versions():
    info = machine_info()
    json.dumps(info)  # goes into results.json as it is
    assert info["cpu"] == cpu_name() and info["cpu"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["libraries"]["torch"] == torch.__version__
    assert info["libraries"]["numpy"] == numpy.__version__
    assert set(info["libraries"]) == set(RESULT_LIBRARIES)


def test_a_library_that_is_not_installed_is_none():
    assert library_versions(("no-such-distribution-xyz", "torch")) == {"no-such-distribution-xyz": None,
                                                                       "torch": torch.__version__}
