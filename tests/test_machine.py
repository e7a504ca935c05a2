"""The machine facts a record carries."""

from workbench.report.machine import machine_name


def test_the_machine_name_says_what_hardware_measured():
    assert machine_name("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 2, 24, "kvm",
                        "0123456789abcdef") == "intel-xeon-platinum-8375c-2c-24g-kvm-01234567"
    assert machine_name("AMD EPYC", 2, 24, "none", "fedcba9876543210") == (
        "amd-epyc-2c-24g-fedcba98")
