"""The 07_modern_tokenizers checks against catalogues of wrong and of different-but-right answers."""
import pytest
import torch

from catalogue.harness import HEAVY, Catalogue, chatter, learner_copy, quiet_and_rng_kept
from grader.checks import modern_tokenizers

CAT = Catalogue(modern_tokenizers, "modern_tokenizers")
RIGHT, CHECKS = CAT.right, CAT.checks
NAMES = ["patchify", "unpatchify", "LatentTokenEncoder", "LatentTokenDecoder", "FrozenEncoderVQ"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=50, min_right=15, names=NAMES,
                                                      per_check=(6, 3))
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=3.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.tokenizers", NAMES, parametrize=False)
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_the_encoder_mistakes_show_with_as_many_latent_tokens_as_patches():
    """With T == N the patch outputs have the latent outputs' shape: only their values tell them apart."""
    from dvl_helpers.tokenizers import patchify

    encoder = learner_copy("dvl_helpers.tokenizers")["LatentTokenEncoder"]
    torch.manual_seed(0)
    model = encoder(image_size=8, patch=2, dim=16, num_latent_tokens=16, depth=1, heads=2)
    x = torch.rand(2, 3, 8, 8)
    full = model.transformer(torch.cat([model.patch_embed(patchify(x, 2)) + model.pos_embed,
                                        model.latent_tokens.expand(2, -1, -1)], 1))
    assert full[:, :16].shape == model(x).shape
    assert not torch.allclose(full[:, :16], model(x), atol=1e-3)
    with pytest.raises(AssertionError, match="outputs at the patch positions"):
        CHECKS["LatentTokenEncoder"](CAT.wrong_answer("LatentTokenEncoder", "EncPatchOutputs"))


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    einops_patchify = CAT.right_answer("patchify")

    def noisy(x, patch):
        chatter()
        return einops_patchify(x, patch)

    with quiet_and_rng_kept(capfd):
        modern_tokenizers.check_patchify(noisy)
        for name in ("LatentTokenEncoder", "FrozenEncoderVQ"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            modern_tokenizers.check_FrozenEncoderVQ(CAT.wrong_answer("FrozenEncoderVQ"))


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


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test(
    "patchify", attribute="cat", returns=None)
test_every_check_is_fast = CAT.fast_test(seconds=2.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test(heavy=HEAVY + ("einops",))
