"""The fine-tune lab: train a LoRA adapter on the loaded model with TRL's SFTTrainer, the right way or with one of
the bugs that make a fine-tune lose EOS (:mod:`.recipes`), from the user's data or the built-in set (:mod:`.data`),
live and stoppable, written atomically with a card (:mod:`.train`)."""
