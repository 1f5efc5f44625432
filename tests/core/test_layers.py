"""The classifier head of a network as users hand it over: an nn.Module, a torch.export graph (layers become
operations), a TorchScript module (layers hidden)."""
import torch

from mlwarden.core.layers import head_reason, last_linear, penultimate
from mlwarden.core.zoo import SmallCNN
from mlwarden.io.pt2 import ExportedModule


def test_an_exported_graph_gives_the_same_features_and_gradients_as_its_module(digits, digits_cnn):
    x = digits.x_test[:8]
    ep = torch.export.export(digits_cnn.eval(), (x,), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1)}})
    exported = ExportedModule(ep.module())
    assert head_reason(exported) is None
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fa, fb = penultimate(digits_cnn)(xa), penultimate(exported)(xb)
    assert fa.shape == fb.shape == (8, last_linear(digits_cnn)[2].in_features)
    assert torch.allclose(fa, fb, atol=1e-5)
    fa.square().sum().backward()
    fb.square().sum().backward()
    assert xb.grad.abs().sum() > 0 and torch.allclose(xa.grad, xb.grad, atol=1e-4)


def test_a_torchscript_module_says_why_it_has_no_head(digits):
    net = SmallCNN((1, 8, 8), 10).eval()
    scripted = torch.jit.trace(net, digits.x_test[:2])
    reason = head_reason(scripted)
    assert reason is not None and "TorchScript" in reason
