import pytest
import torch

from contrast_core import models


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2,)])
def test_every_model_embeds_and_trains(name, shape):
    if name in ("cnn", "resnet18") and len(shape) == 1:
        with pytest.raises(ValueError, match="needs images"):
            models.build(name, shape, 4)
        return
    torch.manual_seed(0)
    model = models.build(name, shape, 4)
    x = torch.rand(3, *shape)
    if name == "vae":
        out = model(x)
        assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 4)
        assert out.recon.shape == x.shape
        loss = out.recon.sum() + out.mu.sum()
    elif name == "aae":
        z, recon = model(x)
        assert z.shape == (3, 4) and recon.shape == x.shape
        loss = recon.sum() + z.sum()
    else:
        loss = model(x).sum()
        assert model(x).shape == (3, 4)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert models.embed(model, x).shape == (3, 4)


def test_mlp_is_the_classic_shape():
    linear = [m for m in models.build("mlp", (1, 8, 8), 2).modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(64, 256), (256, 128), (128, 32), (32, 2)]


def test_vae_embed_is_the_mean():
    torch.manual_seed(0)
    vae = models.build("vae", (1, 8, 8), 3).eval()
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(vae.embed(x), vae(x).mu)


def test_resnet18_loads_local_weights(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    model = models.build("resnet18", (3, 32, 32), 8, weights=str(path))
    assert torch.equal(model.net.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
