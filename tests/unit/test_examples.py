"""Every example configuration shipped to risk managers must load cleanly."""

from pathlib import Path

import pytest

from killswitch.config import build_rules, load_config, summarize

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "rules").glob("*.yaml"))


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"oxfun-basic.yaml", "nado-basic.yaml", "multi-venue.yaml", "demo.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_without_warnings(path):
    config = load_config(path)
    assert config.warnings == ()
    assert len(build_rules(config)) == len(config.rules)
    assert summarize(config)


def test_packaged_demo_is_identical():
    packaged = REPO / "killswitch" / "examples" / "demo.yaml"
    assert packaged.read_bytes() == (REPO / "rules" / "demo.yaml").read_bytes()


def test_demo_contract():
    config = load_config(REPO / "killswitch" / "examples" / "demo.yaml")
    venues = {v.name: v for v in config.venues}
    assert venues["ox-demo"].kind == "oxfun" and venues["nado-demo"].kind == "nado"
    refs = {venues["ox-demo"].api_key.name, venues["ox-demo"].api_secret.name, venues["nado-demo"].private_key.name}
    assert refs == {"KILLSWITCH_DEMO_OX_KEY", "KILLSWITCH_DEMO_OX_SECRET", "KILLSWITCH_DEMO_NADO_KEY"}
    assert "127.0.0.1" in venues["ox-demo"].ws_url and "127.0.0.1" in venues["nado-demo"].gateway_rest_url
