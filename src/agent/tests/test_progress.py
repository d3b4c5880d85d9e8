"""Parsers of progress lines as real frameworks print them, and the tracker that merges them."""

import unittest

from runctl_agent.progress import Tracker, parse_hf_dict, parse_nanogpt, parse_tqdm

# Output shapes taken from the frameworks' own formats (tqdm/std.py format_meter, transformers'
# ProgressCallback, pytorch_lightning's TQDMProgressBar, nanoGPT's train.py).
TQDM = "train:  45%|████▌     | 450/1000 [00:10<00:12, 43.10it/s, loss=2.31, lr=0.0003]"
TQDM_SLOW = " 12%|█▏        | 12/100 [01:10<08:30,  5.80s/it]"
TQDM_NO_TOTAL = "450it [00:10, 43.10it/s, loss=2.31]"
LIGHTNING = "Epoch 2:  45%|████▌     | 450/1000 [00:10<00:12, 43.10it/s, v_num=0, train_loss=2.310]"
LIGHTNING_VAL = "Validation DataLoader 0:  40%|████      | 10/25 [00:00<00:00, 55.21it/s]"
HF_BAR = "  4%|▍         | 40/1000 [00:10<04:00,  4.00it/s]"
HF_LOG = "{'loss': 2.3145, 'grad_norm': 1.2345678, 'learning_rate': 4.8e-05, 'epoch': 0.4}"
HF_EVAL_BAR = " 40%|████      | 10/25 [00:01<00:01,  9.90it/s]"
NANO_ITER = "iter 10: loss 3.1234, time 12.34ms, mfu 1.23%"
NANO_STEP = "step 100: train loss 2.9000, val loss 3.0000"


class ParsersTest(unittest.TestCase):
    def test_tqdm_bar_with_and_without_total(self):
        self.assertEqual(parse_tqdm(TQDM), {"n": 450, "total": 1000, "desc": "train", "postfix": {"loss": 2.31, "lr": 0.0003}})
        self.assertEqual(parse_tqdm(TQDM_SLOW), {"n": 12, "total": 100, "desc": "", "postfix": {}})
        self.assertEqual(parse_tqdm(TQDM_NO_TOTAL), {"n": 450, "desc": "", "postfix": {"loss": 2.31}})
        self.assertIsNone(parse_tqdm("copied 3/4 files"))

    def test_trainer_log_dict_with_numpy_scalars_and_a_step(self):
        self.assertEqual(parse_hf_dict(HF_LOG), ({"loss": 2.3145, "grad_norm": 1.2345678, "learning_rate": 4.8e-05, "epoch": 0.4}, None))
        self.assertEqual(parse_hf_dict("{'eval_loss': np.float64(2.5), 'eval_runtime': 1.2, 'epoch': 1.0, 'step': 500}"),
                         ({"eval_loss": 2.5, "eval_runtime": 1.2, "epoch": 1.0}, 500))
        self.assertIsNone(parse_hf_dict("{'model_type': 'gpt2'}"))

    def test_nanogpt_lines(self):
        self.assertEqual(parse_nanogpt(NANO_ITER), {"step": 10, "loss": 3.1234, "metrics": {"time_ms": 12.34, "mfu": 1.23}})
        self.assertEqual(parse_nanogpt("iter 0: loss 10.9876, time 30728.83ms, mfu -100.00%"),
                         {"step": 0, "loss": 10.9876, "metrics": {"time_ms": 30728.83}})
        self.assertEqual(parse_nanogpt(NANO_STEP), {"step": 100, "metrics": {"train_loss": 2.9, "val_loss": 3.0}})


class TrackerTest(unittest.TestCase):
    def test_tqdm_postfix_gives_loss_and_metrics(self):
        t = Tracker()
        self.assertEqual(t.feed(TQDM), (450, 1000, {"lr": 0.0003, "loss": 2.31}))
        self.assertEqual(t.progress(), {"step": 450, "total": 1000, "loss": 2.31, "metrics": {"lr": 0.0003}})

    def test_trainer_dict_takes_its_step_from_the_trainer_bar_and_ignores_the_evaluation_bar(self):
        t = Tracker()
        self.assertIsNone(t.feed(HF_LOG))  # no step known yet
        t.feed(HF_BAR)
        self.assertEqual(t.feed(HF_LOG), (40, 1000, {"grad_norm": 1.2345678, "learning_rate": 4.8e-05, "epoch": 0.4, "loss": 2.3145}))
        self.assertIsNone(t.feed(HF_EVAL_BAR))
        self.assertEqual(t.progress()["step"], 40)
        t.feed("100%|##########| 1000/1000 [04:10<00:00,  4.00it/s]")
        self.assertIsNone(t.feed(HF_EVAL_BAR))  # the final evaluation, after training
        t.feed(HF_LOG)
        self.assertEqual(t.progress()["step"], 1000)
        self.assertEqual(t.progress()["total"], 1000)
        self.assertEqual(t.progress()["loss"], 2.3145)

    def test_lightning_bar_counts_history_steps_across_epochs_and_skips_validation(self):
        t = Tracker()
        self.assertEqual(t.feed(LIGHTNING), (2450, 1000, {"epoch": 2.0, "loss": 2.31}))
        self.assertEqual(t.progress(), {"step": 450, "total": 1000, "loss": 2.31, "metrics": {"epoch": 2.0}})
        self.assertIsNone(t.feed(LIGHTNING_VAL))
        self.assertEqual(t.progress()["step"], 450)

    def test_nanogpt_and_generic_lines(self):
        t = Tracker()
        t.feed(NANO_STEP)
        self.assertEqual(t.feed("iter 100: loss 2.8000, time 12.00ms, mfu 1.00%"), (100, None, {"time_ms": 12.0, "mfu": 1.0, "loss": 2.8}))
        self.assertEqual(t.progress(), {"step": 100, "loss": 2.8, "metrics": {"train_loss": 2.9, "val_loss": 3.0, "time_ms": 12.0, "mfu": 1.0}})
        g = Tracker()
        g.feed("step=12/400 loss=0.31")
        self.assertEqual(g.progress(), {"step": 12, "total": 400, "loss": 0.31})
        g.feed("epoch 1 step: 13 Loss: nan")
        self.assertEqual(g.progress(), {"step": 13, "total": 400, "loss": 0.31})

    def test_escape_codes_and_checkpoint_declarations(self):
        t = Tracker()
        self.assertIsNone(t.feed("RUNCTL_CHECKPOINT_SAVED step=40"))
        t.feed("\x1b[A\x1b[2K" + TQDM)
        self.assertEqual(t.progress()["step"], 450)

    def test_a_pattern_replaces_the_built_in_formats(self):
        t = Tracker(r"iter (?P<step>[0-9]+): loss (?P<loss>[0-9.]+), time (?P<time_ms>[0-9.]+)ms")
        self.assertIsNone(t.feed(TQDM))
        self.assertEqual(t.feed(NANO_ITER), (10, None, {"time_ms": 12.34, "loss": 3.1234}))
        self.assertEqual(t.progress(), {"step": 10, "loss": 3.1234, "metrics": {"time_ms": 12.34}})

    def test_metric_names_are_bounded(self):
        t = Tracker()
        t.feed("{'loss': 1.0, %s, 'step': 3}" % ", ".join("'m%d': %d" % (i, i) for i in range(40)))
        self.assertEqual(len(t.progress()["metrics"]), 16)

    def test_snapshot_restores_the_state(self):
        t = Tracker()
        t.feed(LIGHTNING)
        again = Tracker()
        again.restore(t.snapshot())
        self.assertEqual(again.progress(), t.progress())
        again.restore({"step": "x", "metrics": 3})
        self.assertEqual(again.progress(), t.progress())


if __name__ == "__main__":
    unittest.main()
