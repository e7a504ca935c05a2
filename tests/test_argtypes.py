"""The typed command-line values: what each parser accepts and what it gives back (refusals
are in tests/test_bad_input.py, one row each)."""

import argparse

import pytest

from workbench import argtypes, exitcodes
from workbench.errors import WorkbenchError


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("0.5", 0.5), ("30s", 30.0), ("5m", 300.0), ("250ms", 0.25), ("1h", 3600.0),
    ("1h30m", 5400.0), ("1.5s", 1.5), (" 2m ", 120.0), ("1e3", 1000.0),
])
def test_a_duration_is_seconds_or_numbers_with_units_as_k6_and_vegeta_write_them(text,
                                                                                  seconds):
    assert argtypes.duration()(text) == pytest.approx(seconds)


def test_a_duration_is_bounded_by_the_option_that_takes_it():
    assert argtypes.duration(argtypes.MAX_TIMEOUT_S)("1h") == 3600.0
    with pytest.raises(argtypes.BadValue, match="at most 3600 s"):
        argtypes.duration(argtypes.MAX_TIMEOUT_S)("61m")
    assert argtypes.duration()("168h") == argtypes.MAX_DURATION_S


def test_a_refusal_is_both_argparse_s_and_the_workbench_s_error():
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.rate("0")
    with pytest.raises(WorkbenchError):
        argtypes.url("http://user:pw@127.0.0.1/")


@pytest.mark.parametrize(("name", "text", "value"), [
    ("duration_s", "30s", 30.0), ("sleep_s", "250ms", 0.25), ("duration_s", "30", 30),
    ("rate", "5", 5), ("alg", "EdDSA", "EdDSA"), ("rate", "5s", "5s"),  # not seconds: refused later
    ("thresholds", '{"http_req_failed": ["rate<0.01"]}', {"http_req_failed": ["rate<0.01"]}),
])
def test_a_parameter_value_is_json_or_for_seconds_a_duration_with_a_unit(name, text, value):
    assert argtypes.param_value(name, text) == value


def test_headers_bodies_and_sizes_parse_to_what_the_driver_takes(tmp_path):
    assert argtypes.header(" X-Test :  a b ") == ("X-Test", "a b")
    body = tmp_path / "body.json"
    body.write_text('{"ids": ["a"]}')
    assert argtypes.body(f"@{body}") == '{"ids": ["a"]}'
    assert argtypes.body('{"inline": 1}') == '{"inline": 1}'
    assert argtypes.sizes()("100000,10,1000,10") == [10, 1000, 100000]
    assert argtypes.url("https://127.0.0.1:8443/a?b=c") == "https://127.0.0.1:8443/a?b=c"
    assert argtypes.scheduler("tls://10.0.0.5:8786") == "tls://10.0.0.5:8786"


def test_exit_codes_combine_to_the_most_severe():
    assert exitcodes.verdict(True) == 0 and exitcodes.verdict(False) == 99
    assert exitcodes.worst([]) == 0
    assert exitcodes.worst([0, 99, 0]) == 99
    assert exitcodes.worst([99, 1, 2]) == 1
    assert exitcodes.worst([0, 130, 1]) == 130
    assert exitcodes.worst([0, 42]) == 1  # an unknown code is a failure, never a pass
    assert exitcodes.for_exception("ThresholdBreach") == 99
    assert exitcodes.for_exception("WorkbenchError") == 2
    assert exitcodes.for_exception("ZeroDivisionError") == 1
