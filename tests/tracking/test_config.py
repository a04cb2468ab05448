from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from monai_patronus.networks import PatronusUNet
from monai_patronus.tracking import bundle_config_record, find_bundle_parser, literal_config
from tests.bundles._workflow import BUNDLES


def _parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / "patronus_demo" / "configs" / c) for c in ("common.json", "train.json")])
    parser.update({"bundle_root": str(BUNDLES / "patronus_demo"), **overrides})
    parser.parse()
    return parser


def test_literal_config_rebuilds_the_network_outside_the_bundle():
    parser = _parser(image_size=16, num_prototypes=7)
    net = parser.get_parsed_content("network_def")
    config = literal_config(parser, "network_def")
    assert "@" not in str(config) and "$" not in str(config)
    assert config["encoder"]["num_prototypes"] == 7  # the override, through the @encoder reference
    rebuilt = ConfigParser(config).get_parsed_content()
    assert isinstance(rebuilt, PatronusUNet)
    rebuilt.load_state_dict(net.state_dict())  # same architecture, parameter for parameter
    assert literal_config(parser, "inferer", exclude=("_target_", "scheduler")) == {
        "autocast_dtype": None,
        "inversion_iterations": 5,
        "guidance_scale": 1.5,
        "sample_clip": 1.0,
    }
    with pytest.raises(ValueError, match="not a component"):
        literal_config(parser, "lr")


def test_config_record_holds_overrides_and_only_evaluated_plain_values():
    parser = _parser(lr=0.05)
    parser.get_parsed_content("ckpt_dir")
    config, resolved = bundle_config_record(parser)
    assert config["lr"] == 0.05 and resolved["lr"] == 0.05
    assert resolved["ckpt_dir"].endswith("checkpoints") and resolved["output_dir"].endswith("output")
    assert "train" not in resolved and "network_def" not in resolved  # components stay in the config only
    assert "grid_images" in resolved and "device" not in resolved  # device was never evaluated: not forced


def test_find_bundle_parser_sees_the_parser_building_the_caller():
    assert find_bundle_parser() is None
    parser = ConfigParser({"probe": {"_target_": "monai_patronus.tracking.find_bundle_parser"}})
    assert parser.get_parsed_content("probe") is parser
