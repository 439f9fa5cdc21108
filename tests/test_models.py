"""Every network builds, runs forward and backward on tiny inputs, and keeps shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_clip, tiny_restorer_config
from perceive_ir.models import (
    TIERS,
    CompactUNet,
    Condition,
    DegradationEncoder,
    PerceiverConfig,
    QualityPerceiver,
    Restormer,
    Restorer,
    RestorerConfig,
)
from perceive_ir.models.compact import WindowAttention
from perceive_ir.models.semantic import Dinov2SemanticEncoder

TINY_RESTORMER = dict(dim=8, blocks=(1, 1, 1, 1), heads=(1, 2, 2, 4), refinement_blocks=1, ffn_expansion=2.0)

RESTORER_VARIANTS = {
    "compact-cfe-sgm": dict(),
    "compact-plain": dict(cfe=False, sgm=False),
    "compact-cfe-only": dict(sgm=False),
    "compact-full-res": dict(backbone_args={"width": 8, "encoder_blocks": [1, 1], "latent_blocks": 1,
                                            "decoder_blocks": [1, 1], "full_res_width": 4}),
    "compact-color-head": dict(color_head=True),
    "compact-attention": dict(backbone_args={"width": 8, "encoder_blocks": [1, 1], "latent_blocks": 1,
                                             "decoder_blocks": [1, 1], "attention_window": 4}),
    "restormer-cfe-sgm": dict(backbone="restormer", backbone_args=TINY_RESTORMER),
    "compact-clip-sgm": dict(semantic="clip", semantic_args={"vision_cfg": {**tiny_clip()["vision_cfg"], "layers": 3},
                                                             "embed_dim": 32, "depths": [0, 1, 2]}),
    "restormer-dinov2-sgm": dict(backbone="restormer", backbone_args=TINY_RESTORMER, semantic="dinov2",
                                 semantic_args={"model_name": "vit_small_patch14_dinov2", "depths": [0, 1, 2, 3],
                                                "image_size": 28, "depth": 4, "embed_dim": 48, "num_heads": 2}),
}


@pytest.mark.parametrize("name", sorted(RESTORER_VARIANTS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_restorer_forward_backward(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    config = tiny_restorer_config(in_channels=in_channels, **RESTORER_VARIANTS[name])
    model = Restorer(config)
    x = torch.rand(2, in_channels, 37, 29, requires_grad=True)  # not a multiple of 8: padded inside
    y = model(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    # without SGM the CFE is trained by its own loss only (InfoNCE), not through the output
    skipped = {id(p) for p in model.cfe.parameters()} if (model.cfe is not None and model.sgm is None) else set()
    grads = [p.grad for p in model.parameters() if p.requires_grad and id(p) not in skipped]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(y).all()
    # frozen semantic encoders get no gradient
    if model.semantic is not None:
        assert not any(p.requires_grad for p in model.semantic.parameters())


def test_paper_restormer_matches_paper_size() -> None:
    model = Restormer(in_channels=3)  # dim 48, [4,6,6,8], heads [1,2,4,8], 2.66, 4 refinement
    parameters = sum(p.numel() for p in model.parameters())
    assert 25e6 < parameters < 27e6  # Restormer is 26.1 M parameters
    assert model.guidance_channels == (384, 192, 96, 96)


def test_backbones_reject_bad_channels() -> None:
    with pytest.raises(ValueError, match="in_channels must be 1 or 3, got 2"):
        CompactUNet(in_channels=2)
    with pytest.raises(ValueError, match="unknown backbone 'unet'"):
        RestorerConfig(backbone="unet")
    with pytest.raises(ValueError, match="sgm=True needs a condition"):
        RestorerConfig(cfe=False, sgm=True, semantic="none")


def test_full_res_path_grows_a_trained_compact_net_without_changing_its_output() -> None:
    torch.manual_seed(0)
    small = CompactUNet(3, 8, (1, 1), 1, (1, 1))
    for parameter in small.parameters():  # stand-in for trained weights: nothing zero any more
        parameter.data.normal_(0, 0.2)
    grown = CompactUNet(3, 8, (1, 1), 1, (1, 1), full_res_width=4, full_res_blocks=2)
    missing, unexpected = grown.load_state_dict(small.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("full_res.") for k in missing)
    x = torch.rand(2, 3, 21, 34)
    with torch.no_grad():
        assert torch.equal(grown(x), small(x))
    # once trained, the path is used: after one step the outputs differ
    out = grown(x)
    (out - x).square().mean().backward()
    assert grown.full_res["tail"].weight.grad.abs().sum() > 0
    with torch.no_grad():
        for parameter in grown.full_res.parameters():
            parameter -= 0.1 * parameter.grad if parameter.grad is not None else 0
        assert not torch.equal(grown(x), small(x))
    with pytest.raises(ValueError, match="full_res_width"):
        CompactUNet(3, 8, full_res_width=-1)


def reference_window_attention(block: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """WindowAttention written out window by window (replicate padding, softmax(q k^T / sqrt(d)) v)."""
    w, d, heads = block.window, block.head_channels, block.heads
    offset = w // 2 if block.shifted else 0
    qkv = block.qkv(x)
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(qkv, (offset, (-(width + offset)) % w, offset, (-(height + offset)) % w),
                                     mode="replicate")
    attended = torch.zeros(x.shape[0], heads * d, *padded.shape[-2:])
    for top in range(0, padded.shape[-2], w):
        for left in range(0, padded.shape[-1], w):
            window = padded[:, :, top:top + w, left:left + w].flatten(2)  # (N, 3 * heads * d, w * w)
            for h in range(heads):
                q, k, v = (window[:, (part * heads + h) * d:(part * heads + h + 1) * d] for part in range(3))
                weights = torch.softmax(q.transpose(1, 2) @ k / d ** 0.5, dim=-1)  # (N, w*w, w*w)
                attended[:, h * d:(h + 1) * d, top:top + w, left:left + w] = (
                    (weights @ v.transpose(1, 2)).transpose(1, 2).reshape(x.shape[0], d, w, w))
    return x + block.out(attended[..., offset:offset + height, offset:offset + width])


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_a_window_by_window_reference(shifted: bool) -> None:
    torch.manual_seed(0)
    block = WindowAttention(6, window=4, heads=2, head_channels=3, shifted=shifted)
    torch.nn.init.normal_(block.out.weight)
    x = torch.randn(2, 6, 11, 9)  # not a multiple of the window: padded and cropped back
    with torch.no_grad():
        assert torch.allclose(block(x), reference_window_attention(block, x), atol=1e-5)


def test_window_attention_reaches_within_its_window_and_the_shifted_one_across() -> None:
    torch.manual_seed(0)
    plain, shifted = WindowAttention(4, 4), WindowAttention(4, 4, shifted=True)
    for block in (plain, shifted):
        torch.nn.init.normal_(block.out.weight)
    x = torch.randn(1, 4, 8, 8)
    changed = x.clone()
    changed[..., 4, 4] += 5.0  # a position in the lower-right window of the plain grid
    with torch.no_grad():
        difference = (plain(changed) - plain(x)).abs().sum(dim=1)[0]
        assert difference[4:, 4:].min() > 0 and difference[:4].max() == 0 and difference[:, :4].max() == 0
        # the shifted grid's window around (4, 4) spans rows / columns 2-5
        difference = (shifted(changed) - shifted(x)).abs().sum(dim=1)[0]
        assert difference[2:6, 2:6].min() > 0 and difference[:2].max() == 0 and difference[6:].max() == 0


def test_attention_grows_a_trained_compact_net_without_changing_its_output() -> None:
    torch.manual_seed(0)
    small = CompactUNet(1, 8, (1, 1), 1, (1, 1))
    for parameter in small.parameters():
        parameter.data.normal_(0, 0.2)
    grown = CompactUNet(1, 8, (1, 1), 1, (1, 1), attention_window=4, attention_blocks=2)
    missing, unexpected = grown.load_state_dict(small.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("attention.") for k in missing)
    assert [block.shifted for block in grown.attention] == [False, True]
    x = torch.rand(2, 1, 21, 34)
    with torch.no_grad():
        assert torch.equal(grown(x), small(x))
    (grown(x) - x).square().mean().backward()
    assert all(block.out.weight.grad.abs().sum() > 0 for block in grown.attention)
    with pytest.raises(ValueError, match="attention_window"):
        CompactUNet(1, 8, attention_window=-1)
    with pytest.raises(ValueError, match="window must be >= 2"):
        CompactUNet(1, 8, attention_window=1)


def test_experts_grow_a_trained_compact_net_and_route_each_image(monkeypatch) -> None:
    """Expert kernels start at zero (a grown net is unchanged); trained, each image gets its own kernels."""
    torch.manual_seed(0)
    small = CompactUNet(3, 8, (1, 1), 1, (1, 1), full_res_width=4)
    for parameter in small.parameters():
        parameter.data.normal_(0, 0.1)
    grown = CompactUNet(3, 8, (1, 1), 1, (1, 1), full_res_width=4, experts=3)
    missing, unexpected = grown.load_state_dict(small.state_dict(), strict=False)
    assert not unexpected and missing and all(k.rsplit(".", 1)[1] in ("delta", "delta_bias") for k in missing)
    assert not any(k.startswith("latent.") for k in missing)  # the latent level stays plain
    x = torch.rand(3, 3, 21, 34)
    routing = torch.softmax(torch.randn(3, 3), dim=-1)
    with torch.no_grad():
        assert torch.allclose(grown(x, routing=routing), small(x), rtol=1e-4, atol=1e-4)
    out = grown(x, routing=routing)
    (out - x).square().mean().backward()
    deltas = [m.delta for m in grown.modules() if hasattr(m, "delta")]
    assert deltas and all(d.grad is not None and d.grad.abs().sum() > 0 for d in deltas)
    # different routings give different experts' gradients (images specialise them)
    assert not torch.allclose(deltas[0].grad[0], deltas[0].grad[1])
    with torch.no_grad():
        for delta in deltas:
            delta.normal_(0, 0.1)
        # one kernel per image: the grouped batch equals each image alone, and routing matters
        together = grown(x, routing=routing)
        alone = torch.cat([grown(x[i : i + 1], routing=routing[i : i + 1]) for i in range(3)])
        assert torch.allclose(together, alone, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(grown(x, routing=routing[[1, 2, 0]]), together, atol=1e-3)
        # a (1, K) routing (tiles of one image) runs dense convolutions and agrees with the grouped path
        calls = []
        conv2d = torch.nn.functional.conv2d

        def spy(*args, **kwargs):
            calls.append(kwargs.get("groups", 1))
            return conv2d(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
        dense = grown(x, routing=routing[:1])
        assert calls and set(calls) == {1}
        calls.clear()
        grouped = grown(x, routing=routing[:1].expand(3, 3).contiguous())
        assert 3 in calls
        assert torch.allclose(dense, grouped, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pass a routing"):
        grown(x)
    with pytest.raises(ValueError, match="routing of shape"):
        grown(x, routing=routing[:, :2])
    with pytest.raises(ValueError, match="routing of shape"):
        grown.encoder1[0].conv1(torch.rand(3, 8, 4, 4), routing[:2])
    with pytest.raises(ValueError, match="experts"):
        CompactUNet(3, 8, experts=-1)


def test_restorer_routes_experts_by_each_images_condition(tmp_path) -> None:
    from perceive_ir import zoo

    torch.manual_seed(0)
    config = tiny_restorer_config(backbone_args=dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1),
                                                     experts=2))
    model = Restorer(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        condition = model.condition(x)
        routing = model.routing(condition)
        assert torch.allclose(routing, model.router(condition.vector(0)).softmax(-1))
        assert torch.allclose(routing.sum(-1), torch.ones(2)) and not torch.allclose(routing[0], routing[1])
        with torch.autocast("cpu", dtype=torch.bfloat16):  # routed in float32 whatever the autocast
            assert torch.allclose(model.routing(condition), routing, atol=1e-6)
        # one image's condition routes a whole batch of its tiles with one (1, K) routing
        single = model.condition(x[:1])
        assert model.routing(single).shape == (1, 2)
        tiles = torch.cat([x[:1], x[:1].flip(-1)])
        assert torch.allclose(model(tiles, single), torch.cat([model(t[None], single) for t in tiles]), atol=1e-5)
        expected = model.backbone(x, modulate=model.sgm.modulator(condition), routing=routing)
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert torch.allclose(model(x), torch.cat([model(x[i : i + 1]) for i in range(2)]), atol=1e-5)
        # saved and loaded through the zoo's safetensors path: same outputs
        zoo.save_weights(model, tmp_path / "experts.safetensors")
        loaded = zoo.load_restorer(tmp_path / "experts.safetensors").eval()
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="need sgm=True"):
        tiny_restorer_config(backbone_args=dict(width=8, experts=2), sgm=False)


def test_guidance_starts_as_identity() -> None:
    """SGM blocks are zero-initialised: a fresh restorer equals its bare backbone."""
    torch.manual_seed(0)
    model = Restorer(tiny_restorer_config()).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model.backbone(x), atol=1e-6)


def test_color_head_starts_as_identity_and_corrects_each_image_and_channel() -> None:
    """Zero-initialised, the head leaves a grown model unchanged; trained, it applies y * (1 + g) + b per image."""
    torch.manual_seed(0)
    plain = Restorer(tiny_restorer_config()).eval()
    grown = Restorer(tiny_restorer_config(color_head=True)).eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("color.") for name in missing)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(grown(x), plain(x))
        last = grown.color.mlp[-1]
        last.bias.copy_(torch.tensor([0.5, 0.0, -0.5, 0.1, 0.2, 0.3]))  # gains, then offsets
        condition = grown.condition(x)
        expected = plain(x) * torch.tensor([1.5, 1.0, 0.5]).view(1, 3, 1, 1) + torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
        assert torch.allclose(grown(x, condition), expected, atol=1e-6)
        # images of one batch get their own correction, from their own condition
        last.weight.normal_()
        grown.color.statistics.weight.normal_()
        head = grown.color
        hidden = head.mlp[0](condition.vector(0)) + head.statistics(condition.statistics)
        gain, offset = head.mlp[2](head.mlp[1](hidden)).view(2, 2, 3, 1, 1).unbind(1)
        assert not torch.allclose(gain[0], gain[1], atol=1e-3)
        assert torch.allclose(grown(x), plain(x) * (1 + gain) + offset, atol=1e-5)
        separate = torch.cat([grown(x[i : i + 1]) for i in range(2)])
        assert torch.allclose(grown(x), separate, atol=1e-5)
        # the statistics of crops are averaged like the embedding
        crops = torch.rand(3, 3, 32, 32)
        assert torch.allclose(grown.condition_from_crops(crops).statistics,
                              grown.condition(crops).statistics.mean(0, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="color_head=True needs"):
        tiny_restorer_config(color_head=True, sgm=False)


def test_image_statistics_are_percentiles_moments_and_the_dark_channel() -> None:
    from perceive_ir.models.restorer import image_statistics

    x = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    x[1, 2] *= 0.2  # a dim blue channel sets the dark channel of the second image
    stats = image_statistics(x)
    assert stats.shape == (2, 5 * 3 + 3)
    values = x.flatten(2).double().numpy()
    for n in range(2):
        for c in range(3):
            expected = np.quantile(values[n, c], [0.01, 0.5, 0.99])
            np.testing.assert_allclose(stats[n, 3 * c : 3 * c + 3].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(stats[n, 9:12].numpy(), values[n].mean(-1), atol=1e-5)
        np.testing.assert_allclose(stats[n, 12:15].numpy(), values[n].std(-1, ddof=1), atol=1e-5)
        np.testing.assert_allclose(stats[n, 15:].numpy(), np.quantile(values[n].min(0), [0.01, 0.5, 0.99]), atol=1e-5)
    assert stats[1, 16] < 0.2 < stats[0, 16]
    huge = image_statistics(torch.rand(1, 1, 4200, 4200))  # over torch.quantile's 2^24 elements: subsampled
    assert abs(float(huge[0, 1]) - 0.5) < 0.01


def test_condition_from_crops_is_the_mean_embedding() -> None:
    torch.manual_seed(0)
    model = Restorer(tiny_restorer_config()).eval()
    crops = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        condition = model.condition_from_crops(crops)
        each = model.cfe(crops)
    expected = torch.nn.functional.normalize(each.mean(0, keepdim=True), dim=-1)
    assert torch.allclose(condition.embedding, expected, atol=1e-6)
    assert condition.expand(3).embedding.shape == (3, 16)


def test_cfe_embedding_is_unit_norm() -> None:
    encoder = DegradationEncoder(3, embed_dim=24)
    z = encoder(torch.rand(5, 3, 48, 40))
    assert z.shape == (5, 24)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_condition_requires_content() -> None:
    with pytest.raises(ValueError, match="needs an embedding"):
        Condition().vector(0)


def test_dinov2_semantic_encoder_gives_class_tokens() -> None:
    encoder = Dinov2SemanticEncoder("vit_small_patch14_dinov2", depths=(0, 2), image_size=28, depth=3,
                                    embed_dim=48, num_heads=2).lock()
    tokens = encoder(torch.rand(2, 1, 50, 40))
    assert len(tokens) == 2 and all(t.shape == (2, 48) for t in tokens)


# -- perceiver ----------------------------------------------------------------------------


def test_perceiver_probabilities_and_gradients() -> None:
    torch.manual_seed(0)
    perceiver = QualityPerceiver(PerceiverConfig(clip_config=tiny_clip())).lock_text()
    images = torch.rand(3, 1, 70, 90)
    logits = perceiver(perceiver.prepare(images))
    assert logits.shape == (3, len(TIERS))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert perceiver.ctx.grad is not None and perceiver.ctx.grad.abs().sum() > 0
    assert perceiver.clip.token_embedding.weight.grad is None  # text tower frozen
    assert perceiver.clip.visual.conv1.weight.grad is not None  # image tower trainable here
    probabilities = perceiver.probabilities(images)
    assert torch.allclose(probabilities.sum(-1), torch.ones(3), atol=1e-5)


def test_prompt_initialisation_uses_tier_words() -> None:
    """Last context token = word embedding of terrible/mediocre/excellent; the rest ~ N(0, 0.02)."""
    import open_clip

    torch.manual_seed(0)
    perceiver = QualityPerceiver(PerceiverConfig(clip_config=tiny_clip()))
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=24)
    for tier, word in enumerate(("terrible", "mediocre", "excellent")):
        ids = torch.tensor(tokenizer.encode(word))
        expected = perceiver.clip.token_embedding(ids).mean(0)
        assert torch.allclose(perceiver.ctx[tier, -1], expected)
    rest = perceiver.ctx[:, :-1]
    assert rest.shape == (3, 15, 32)
    assert 0.01 < rest.std().item() < 0.03
    # the template has sot + 16 placeholders + '.' + eot
    assert perceiver.tokens.shape == (3, 24)
    assert (perceiver.tokens.argmax(-1) == 18).all()


def test_perceiver_rejects_bad_images() -> None:
    perceiver = QualityPerceiver(PerceiverConfig(clip_config=tiny_clip()))
    with pytest.raises(ValueError, match="expected images of shape"):
        perceiver.prepare(torch.rand(2, 2, 32, 32))
    with pytest.raises(ValueError, match="tier_words needs 3 words"):
        PerceiverConfig(tier_words=("bad", "good"))


def test_open_clip_tiny_model_roundtrip_through_pretrained_path(tmp_path) -> None:
    """The real open_clip loading path: register a config, save weights, reload with pretrained=<file>."""
    import json

    import open_clip
    from safetensors.torch import save_file

    from perceive_ir.models import build_clip

    config_path = tmp_path / "perceive-ir-test-tiny.json"
    config_path.write_text(json.dumps(tiny_clip()))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model("perceive-ir-test-tiny")
    weights = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    reloaded = build_clip(PerceiverConfig(clip_model="perceive-ir-test-tiny"), pretrained=str(weights))
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    # and through a config dict (the offline default's path)
    from_dict = build_clip(PerceiverConfig(clip_config=tiny_clip()), pretrained=str(weights))
    assert torch.equal(from_dict.visual.conv1.weight, model.visual.conv1.weight)
