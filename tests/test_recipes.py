"""Every recipe is a vLLM --config file that vLLM 0.26's own `vllm serve` parser accepts."""

import glob
import os

import pytest
import yaml

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "*.yaml")))


def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_parses_with_vllm_serve_parser(path):
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    with open(path) as f:
        cfg = yaml.safe_load(f)
    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(["--config", path])
    if "model" in cfg:         # vLLM takes it literally: a hub id or an absolute path, never ~ or a relative one
        assert args.model == cfg["model"]
        assert not cfg["model"].startswith(("~", ".")), cfg["model"]
        assert cfg["model"].startswith("/") or cfg["model"].count("/") == 1, cfg["model"]
    for key, value in cfg.items():
        if key != "model":
            assert getattr(args, key.replace("-", "_")) == value, key
