"""The lab's built-in inputs: a reference text for the teacher-forced quality pass, and prompts for the answers.

The reference text was written for kanibook (plain English prose, about 300 tokens for a Llama-style tokenizer),
so it is in no model's training data as such and may be reused under the project's license.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROMPTS", "REFERENCE_TEXT"]

REFERENCE_TEXT = (
    "On the north side of the harbour there is a small bakery that opens before the fishing boats go out. The baker "
    "starts work at three in the morning, when the streets are empty and the only sound is the water against the "
    "stone. She mixes flour, water, salt and a little of yesterday's dough, and leaves the bowls to rest while the "
    "ovens warm up. Most of her customers are fishermen, who buy two loaves at a time: one for breakfast and one "
    "to take to sea. In winter the bread is darker and heavier, because she adds rye and lets it rise for longer in "
    "the cold room at the back of the shop.\n\n"
    "When her father ran the bakery, he measured nothing. He knew by the feel of the dough when it had enough water, "
    "and by the smell of the crust when a loaf was done. His daughter writes everything down in a notebook: the "
    "weight of each batch, the temperature of the room, the time the loaves spend in the oven. She says that the "
    "notebook does not make the bread better, but it tells her why a bad day was bad. On the first page, in her "
    "father's handwriting, there is a single line: good bread needs time, heat and patience, and the last of "
    "these is the hardest to find.\n\n"
    "By seven o'clock the shelves are empty. The baker cleans the tables, writes the day's numbers in the notebook, "
    "and walks along the harbour to watch the boats come back."
)

#: Short questions with short, stable answers: greedy decoding makes them reproducible on one machine.
DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Name three colours of the rainbow.",
)
