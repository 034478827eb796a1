import pytest
import torch

from trainables.models import create_model, list_models
from undistill.errors import ConfigError


@pytest.mark.parametrize("name", ["cnn1d", "mlp"])  # the image models: test_cifar_models.py
def test_every_1d_model_runs_forward_and_backward(name):
    model = create_model(name, num_classes=10, input_shape=(1, 40))
    out = model(torch.randn(4, 1, 40))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean cnn1d"):
        create_model("cnn1", 10, (1, 40))
    with pytest.raises(ConfigError, match="has no option 'widht'"):
        create_model("cnn1d", 10, (1, 40), widht=3)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_classifies_a_batch_of_its_inputs(name):
    """Every entry of the registry (the image models load on first use): a 1-D signal or a
    CIFAR image, whichever the model takes, gives (N, classes) logits."""
    try:
        model, shape = create_model(name, 10, (1, 40)), (1, 40)
    except ConfigError:  # an image model: it names the input it needs
        model, shape = create_model(name, 10, (3, 32, 32)), (3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 10)
