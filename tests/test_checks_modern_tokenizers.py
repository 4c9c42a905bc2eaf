"""The 07_modern_tokenizers checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import modern_tokenizers

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("modern_tokenizers_wrong").CASES
RIGHT = _load("modern_tokenizers_right").CASES
CHECKS = {name[len("check_"):]: getattr(modern_tokenizers, name) for name in modern_tokenizers.__all__}
NAMES = ["patchify", "unpatchify", "LatentTokenEncoder", "LatentTokenDecoder", "FrozenEncoderVQ"]


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert set(CHECKS) == set(NAMES)
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 50 and len(RIGHT) >= 15
    for name in NAMES:
        assert sum(c[0] == name for c in WRONG) >= 6, name
        assert sum(c[0] == name for c in RIGHT) >= 3, name
    assert len({_id(c) for c in WRONG}) == len(WRONG)
    assert len({_id(c) for c in RIGHT}) == len(RIGHT)


@pytest.mark.parametrize("case", WRONG, ids=_id)
def test_wrong_answer_fails(case):
    name, answer, why = case
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    message = str(info.value)
    assert message, f"empty message for: {why}"
    assert "Traceback" not in message


@pytest.mark.parametrize("case", RIGHT, ids=_id)
def test_right_answer_passes(case):
    name, answer, how = case
    start = time.perf_counter()
    CHECKS[name](answer)
    assert time.perf_counter() - start < 3.0, f"check_{name} is slow on: {how}"


def _reference_as_learner_code():
    import dvl_helpers.tokenizers as ref

    source = pathlib.Path(ref.__file__).read_text()
    source = source.replace("from .transformer import", "from dvl_helpers.transformer import")
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    return ref, namespace


def test_reference_passes_when_copied_but_fails_when_called():
    """The library's own code passes the checks when it is the learner's own copy."""
    ref, namespace = _reference_as_learner_code()
    for name in NAMES:
        with pytest.raises(AssertionError, match="reference implementation"):
            CHECKS[name](getattr(ref, name))
        CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
    ("patchify", "patch_pixels_last", "(row, column, channel)"),
    ("patchify", "patch_grid_transposed", "column-major"),
    ("patchify", "patch_unfold_no_transpose", "the patches go along dim 1"),
    ("patchify", "patch_square", "must have shape"),
    ("patchify", "patch_numpy", "gradients"),
    ("unpatchify", "unpatch_pixels_last", "does not invert patchify"),
    ("unpatchify", "unpatch_hw_swapped", "height and width are swapped"),
    ("unpatchify", "unpatch_detached", "gradients"),
    ("LatentTokenEncoder", "EncPatchOutputs", "outputs at the patch positions"),
    ("LatentTokenEncoder", "EncAllPatches", "one per patch"),
    ("LatentTokenEncoder", "EncNoLatents", "together with the patches"),
    ("LatentTokenEncoder", "EncNoPos", "add pos_embed"),
    ("LatentTokenEncoder", "EncCausal", "bidirectional"),
    ("LatentTokenEncoder", "EncMixesBatch", "other images of the batch"),
    ("LatentTokenEncoder", "EncDetachedLatents", "self.latent_tokens"),
    ("LatentTokenEncoder", "EncBlocksOnly", "final LayerNorm"),
    ("LatentTokenEncoder", "EncPixelsLast", "check patchify first"),
    ("LatentTokenDecoder", "DecNoMaskPos", "carry its position"),
    ("LatentTokenDecoder", "DecNoLatentPos", "add latent_pos"),
    ("LatentTokenDecoder", "DecReadsLatents", "not from the latent tokens' outputs"),
    ("LatentTokenDecoder", "DecNoMaskToken", "learned mask_token"),
    ("LatentTokenDecoder", "DecCausal", "bidirectional"),
    ("LatentTokenDecoder", "DecPixelsLast", "check unpatchify first"),
    ("LatentTokenDecoder", "DecDetached", "z_q"),
    ("FrozenEncoderVQ", "FvqNotFrozen", "receives gradients"),
    ("FrozenEncoderVQ", "FvqTrainMode", "stay in eval mode"),
    ("FrozenEncoderVQ", "FvqEvalInForward", "stay in eval mode"),
    ("FrozenEncoderVQ", "FvqTrainNoSuper", "super().train(mode)"),
    ("FrozenEncoderVQ", "FvqTrainNoReturn", "must return the model itself"),
    ("FrozenEncoderVQ", "FvqFreezesAll", "no gradient reaches the decoder"),
    ("FrozenEncoderVQ", "FvqDecodesFeatures", "not the encoder's features"),
    ("FrozenEncoderVQ", "FvqLossWithRec", "the quantizer's loss"),
    ("FrozenEncoderVQ", "FvqQuantizerEval", "in train mode"),
    ("FrozenEncoderVQ", "FvqEncodeUpdates", "updated the codebook"),
    ("FrozenEncoderVQ", "FvqEncodeLeavesEval", "in the mode it found it"),
    ("FrozenEncoderVQ", "FvqDecodeChannelsLast", "channel-first"),
    ("FrozenEncoderVQ", "FvqDecodeCached", "decode the codes the indices name"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_the_encoder_mistakes_show_with_as_many_latent_tokens_as_patches():
    """With T == N the patch outputs have the latent outputs' shape: only their values tell."""
    ref, namespace = _reference_as_learner_code()
    encoder = namespace["LatentTokenEncoder"]
    torch.manual_seed(0)
    model = encoder(image_size=8, patch=2, dim=16, num_latent_tokens=16, depth=1, heads=2)
    x = torch.rand(2, 3, 8, 8)
    full = model.transformer(torch.cat([model.patch_embed(ref.patchify(x, 2)) + model.pos_embed,
                                        model.latent_tokens.expand(2, -1, -1)], 1))
    assert full[:, :16].shape == model(x).shape
    assert not torch.allclose(full[:, :16], model(x))


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    right = dict((c[1].__name__, c[1]) for c in RIGHT)

    def noisy(x, patch):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return right["patch_einops"](x, patch)

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    modern_tokenizers.check_patchify(noisy)
    modern_tokenizers.check_LatentTokenEncoder(right["EncReference"])
    modern_tokenizers.check_FrozenEncoderVQ(right["FvqReference"])
    with pytest.raises(AssertionError):
        modern_tokenizers.check_FrozenEncoderVQ(next(c[1] for c in WRONG if c[0] == "FrozenEncoderVQ"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(x, patch):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"patchify\(x of shape \(2, 3, 8, 8\), 4\) "
                                             r"raised NotImplementedError: TODO"):
        modern_tokenizers.check_patchify(broken)

    class Unwritten(torch.nn.Module):
        def __init__(self, encoder, quantizer, decoder):
            super().__init__()
            raise NotImplementedError()

    with pytest.raises(AssertionError, match=r"FrozenEncoderVQ\(encoder, quantizer, decoder\) raised"):
        modern_tokenizers.check_FrozenEncoderVQ(Unwritten)


def test_a_class_is_required():
    with pytest.raises(AssertionError, match="subclass of torch.nn.Module"):
        modern_tokenizers.check_LatentTokenEncoder(lambda x: x)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "cat", lambda *a, **k: None)
    answer = next(c[1] for c in RIGHT if c[0] == "patchify")
    with pytest.raises(AssertionError, match="has replaced"):
        modern_tokenizers.check_patchify(answer)


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.modern_tokenizers; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader', 'einops'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
