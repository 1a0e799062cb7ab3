"""Libraries' notices about kanibook's own offline set-up stay out of the cell (lowered to DEBUG, not lost)."""

from __future__ import annotations

import logging

import pytest

import kanibook  # noqa: F401 - importing kanibook installs the filter


def test_the_kernels_offline_trust_notice_is_lowered_to_debug(caplog, capsys):
    hf_hub = pytest.importorskip("kernels._internals.hf_hub")  # what transformers loads for bitsandbytes
    caplog.set_level(logging.INFO)
    hf_hub._check_trust_remote_code("kernels-community/quantization-bitsandbytes", True, False)
    assert not [r for r in caplog.records if "publisher trust check" in r.getMessage()]
    assert "publisher trust check" not in capsys.readouterr().err  # nothing in red under the cell

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="kernels._internals.hf_hub")  # whoever asks for DEBUG still sees it
    hf_hub._check_trust_remote_code("kernels-community/quantization-bitsandbytes", True, False)
    [record] = [r for r in caplog.records if "publisher trust check" in r.getMessage()]
    assert record.levelno == logging.DEBUG


def test_other_warnings_of_that_logger_pass_unchanged(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("kernels._internals.hf_hub").warning("Something else went wrong")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
