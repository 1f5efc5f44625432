"""Spam-filter poisoning on the SMS Spam Collection (70/30 stratified split, seed 0), against the numbers of
Nelson et al. 2008 that the issue asks for: the SpamBayes-style filter and a scikit-learn MultinomialNB
pipeline, the dictionary and focused attacks, and RONI against them."""
import dataclasses

import numpy as np
import pytest

from mlwarden.core.threat import Context
from mlwarden.defenses.roni import Roni
from mlwarden.text.filters import FilterTarget, SklearnTextFilter, sklearn_recipe, spambayes_recipe
from mlwarden.text.messages import decode, encode
from mlwarden.text.spambayes import HAM, SPAM, UNSURE, tokenize
from mlwarden.threats.corruption.spam_common import HAM_FLAGGED, HAM_SPAM, SPAM_PASSED, error_rates
from mlwarden.threats.corruption.spam_dictionary import SpamDictionary, dictionary_attack
from mlwarden.threats.corruption.spam_focused import focused_attack, inbox_targets


@pytest.fixture(scope="module")
def clean(sms_spam):
    recipe = spambayes_recipe()
    return recipe, recipe.fit(sms_spam.x_train, sms_spam.y_train)


def test_messages_survive_the_byte_encoding():
    texts = ["Free entry £100 – now!", "", "naïve café 😀", "x" * 10]
    assert decode(encode(texts)) == texts


def test_tokens_are_spambayes_words():
    assert tokenize("Hi!! FREE entry, call 09061701461 now: supercalifragilistic") == frozenset(
        {"free", "entry", "call", "09061701461", "now", "skip:s 20"})


def test_spambayes_clean_filter_flags_at_most_1_percent_of_ham(sms_spam, clean):
    _, flt = clean
    r = error_rates(flt, sms_spam.x_test, sms_spam.y_test)
    assert r[HAM_SPAM].n == 1449 and r[HAM_SPAM].value <= 0.01, r[HAM_SPAM].text()
    assert r[SPAM_PASSED].value <= 0.05, r[SPAM_PASSED].text()   # it does catch spam
    v = flt.verdicts(decode(sms_spam.x_test))
    assert set(np.unique(v)) == {HAM, UNSURE, SPAM}              # the three-way verdict of SpamBayes


def test_dictionary_attack_at_1_percent_control(sms_spam, clean):
    recipe, flt = clean
    base = error_rates(flt, sms_spam.x_test, sms_spam.y_test)
    optimal = dictionary_attack(recipe, sms_spam, "optimal", [0.001, 0.01])
    realistic = dictionary_attack(recipe, sms_spam, "realistic", [0.01])
    assert optimal[1]["messages"] == 39
    opt, real = optimal[1]["rates"][HAM_FLAGGED], realistic[0]["rates"][HAM_FLAGGED]
    assert opt.value >= 0.90, opt.text()
    assert real.value >= 0.50, real.text()
    assert real.ci_low > base[HAM_FLAGGED].ci_high      # beyond what the clean filter does, intervals apart
    assert optimal[0]["rates"][HAM_FLAGGED].value < opt.value + 1e-9   # more control never helps less here


def test_focused_attack_knowing_half_the_words(sms_spam, clean):
    recipe, flt = clean
    targets = inbox_targets(flt, sms_spam, 40, seed=0)
    assert len(targets) == 40 and all(v == HAM for v in flt.verdicts(targets))
    res = focused_attack(recipe, sms_spam, targets, [0.1, 0.5], control=0.01)
    half = np.mean(res[0.5]["moved"])
    assert half >= 0.70, half
    assert np.mean(res[0.1]["moved"]) < half            # knowing more of the message works better


def test_roni_removes_dictionary_mail_and_keeps_the_filter_honest(sms_spam, clean, tmp_path):
    recipe, flt = clean
    base = error_rates(flt, sms_spam.x_test, sms_spam.y_test)
    roni = Roni()
    params = roni.params_for("quick")
    defended, facts = roni.defend_recipe(recipe, params, sms_spam)
    for kind in ("optimal", "realistic"):
        row = dictionary_attack(defended, sms_spam, kind, [0.01])[0]
        attack_removed, legit_removed = row["removal"]
        assert attack_removed.value >= 0.95, (kind, attack_removed.text())
        assert legit_removed.value <= 0.05, (kind, legit_removed.text())
        after = row["rates"]
        # the filter's ham error after RONI stays within the clean filter's 95% interval (or below it)
        assert after[HAM_SPAM].value <= base[HAM_SPAM].ci_high, (kind, after[HAM_SPAM].text(), base[HAM_SPAM].text())
        assert after[HAM_FLAGGED].value <= base[HAM_FLAGGED].ci_high, (kind, after[HAM_FLAGGED].text())
        assert after[SPAM_PASSED].value <= 0.10, (kind, after[SPAM_PASSED].text())


def test_multinomial_nb_lets_spam_through_and_the_report_says_so(sms_spam, tmp_path):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
    pipe = make_pipeline(CountVectorizer(), MultinomialNB()).fit(decode(sms_spam.x_train), sms_spam.y_train.numpy())
    flt = SklearnTextFilter(pipe)
    ctx = Context(target=FilterTarget(flt), data=sms_spam, evidence_dir=tmp_path / "evidence" / "spam-dictionary",
                  recipe=sklearn_recipe(flt))
    threat = SpamDictionary()
    f = threat.run(ctx, threat.params_for("quick", {"controls": [0.01], "dictionaries": ["optimal"]}))
    clean_caught = 1 - f.metric(f"clean: {SPAM_PASSED}").value
    poisoned = f.metric(f"optimal dictionary, 1% control: {SPAM_PASSED}")
    assert clean_caught >= 0.85, clean_caught
    assert poisoned.value >= 0.5, poisoned.text()                # spam recall collapses...
    assert f.metric(f"optimal dictionary, 1% control: {HAM_SPAM}").value <= 0.02   # ...ham is not flagged
    assert "lets spam through" in f.details["failure_mode"]
    assert f.details["headline_metric"].endswith(SPAM_PASSED)
    assert (tmp_path / f.evidence[0]).exists()


def test_roni_trials_hold_both_classes_so_any_pipeline_can_be_judged(sms_spam):
    """A LinearSVC cannot be fitted on one class: each trial's training and quiz sets hold ham and spam."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from mlwarden.defenses.roni import RoniFilter
    texts, labels = decode(sms_spam.x_train[:60]), sms_spam.y_train[:60].numpy()
    flt = RoniFilter(lambda: SklearnTextFilter(make_pipeline(TfidfVectorizer(), LinearSVC())), texts, labels,
                     trials=5, train_size=4, quiz_size=10, threshold=None, seed=3)
    assert all(set(t_y) == {0, 1} and set(q_y) == {0, 1} for _, t_y, _, q_y in flt.trials)
    assert flt.keep_mask(sms_spam.x_train[60:80], sms_spam.y_train[60:80]).shape == (20,)


class _Deaf:
    """A filter no training message changes: it answers spam for one fixed word, whatever it was fitted on."""
    name = "deaf"

    def fit(self, texts, labels):
        return self

    def spam_scores(self, texts):
        return np.array([float("free" in t.lower()) for t in texts])

    def verdicts(self, texts):
        return np.where(self.spam_scores(texts) >= 0.5, SPAM, HAM)


def test_roni_says_unreliable_when_no_message_changes_the_model(sms_spam, tmp_path):
    """RONI on a model that no single message changes (a fine-tune from fixed weights too short to move an answer)
    calibrates on impacts that are all equal: its verdicts are no evidence and its own check says so; on a
    filter that learns from its mail (MultinomialNB) it does not."""
    from types import SimpleNamespace

    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    from mlwarden.core.defense import DefenseContext
    from mlwarden.text.filters import FilterRecipe
    roni = Roni()
    params = roni.params_for("quick", {"trials": 2, "trusted": 60, "train_size": 10, "quiz_size": 20})
    small = dataclasses.replace(sms_spam, x_train=sms_spam.x_train[:300], y_train=sms_spam.y_train[:300])
    seen = {}
    for name, make in (("deaf", _Deaf), ("nb", lambda: SklearnTextFilter(make_pipeline(CountVectorizer(),
                                                                                         MultinomialNB())))):
        defended, _ = roni.defend_recipe(FilterRecipe(name, make), params, small)
        ctx = DefenseContext(small, tmp_path / name, seed=0, profile="quick")
        seen[name] = roni.evaluate(None, SimpleNamespace(recipe=defended), params, ctx)
    assert seen["deaf"]["unreliable"] is True and seen["deaf"]["summary"].startswith("UNRELIABLE")
    assert seen["deaf"]["rejected"]["value"] == 0 and seen["deaf"]["rejected"]["n"] == 300
    assert seen["nb"]["unreliable"] is False and "UNRELIABLE" not in seen["nb"]["summary"]


class _NearlyDeaf(_Deaf):
    """Deaf, except that training on a message whose digest's last byte is a multiple of 64 (1 in 64) makes it call
    everything spam: a model that hardly any single message changes."""
    name = "nearly-deaf"

    def fit(self, texts, labels):
        import hashlib
        self.all_spam = any(hashlib.sha256(t.encode()).digest()[-1] % 64 == 0 for t in texts)
        return self

    def spam_scores(self, texts):
        return np.ones(len(texts)) if self.all_spam else super().spam_scores(texts)


def test_roni_says_unreliable_when_almost_no_message_changes_the_model(sms_spam, tmp_path):
    """The same when a few trusted messages do move the quiz (their impacts give a spread above zero, so a
    zero-spread test passes it): under 5 of them (or 5%), the threshold rests on noise."""
    from types import SimpleNamespace

    from mlwarden.core.defense import DefenseContext
    from mlwarden.text.filters import FilterRecipe
    roni = Roni()
    params = roni.params_for("quick", {"trials": 2, "trusted": 200, "train_size": 10, "quiz_size": 20})
    small = dataclasses.replace(sms_spam, x_train=sms_spam.x_train[:300], y_train=sms_spam.y_train[:300])
    defended, _ = roni.defend_recipe(FilterRecipe("nearly-deaf", _NearlyDeaf), params, small)
    seen = roni.evaluate(None, SimpleNamespace(recipe=defended), params, DefenseContext(small, tmp_path, seed=0,
                                                                                      profile="quick"))
    flt = defended.data_filter
    assert flt.spread > 0 and 1 <= flt.moved < 5, (flt.spread, flt.moved)   # what the zero-spread check missed
    assert seen["unreliable"] is True
    assert seen["summary"].startswith(f"UNRELIABLE: {flt.moved} of the 200 trusted messages changed the quiz accuracy")
