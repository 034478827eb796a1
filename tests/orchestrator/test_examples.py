"""The cluster launcher YAML the README points to is one Ray accepts."""

from pathlib import Path

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml"


def test_the_example_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(EXAMPLE.read_text())
    config = prepare_config(raw)  # fills Ray's defaults for the provider, as `ray up` does
    validate_config(config)
    assert config["max_workers"] == len(raw["provider"]["worker_ips"])
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in starts
