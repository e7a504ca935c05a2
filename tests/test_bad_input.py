"""Malformed notebook parameters: refused in the first cell, before anything is seeded or sent."""

import papermill
import pytest

from workbench.paths import notebooks_dir


@pytest.mark.parametrize("params,needle", [
    ({"rate": "fast"}, "parameter rate must be a number, got 'fast'"),
    ({"fleet_size": 10.5}, "parameter fleet_size must be an integer in 1..1000000, got 10.5"),
    ({"duration_s": -2}, "parameter duration_s must be positive, got -2"),
    ({"thresholds": {"http_req_duration": ["p95 < 500"]}}, "malformed threshold 'p95 < 500'"),
])
def test_wrong_parameters_fail_the_first_cell_with_a_clear_message(embedded_env, tmp_path,
                                                                     params, needle):
    run_dir = tmp_path / "run"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(notebooks_dir() / "agent_storm.ipynb"),
                                   str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   progress_bar=False,
                                   parameters={"run_dir": str(run_dir), **params})
    assert err.value.ename == "WorkbenchError"
    assert needle in err.value.evalue
    assert not (run_dir / "requests.parquet").exists()  # nothing was sent
