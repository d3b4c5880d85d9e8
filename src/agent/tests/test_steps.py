import unittest

from runctl_agent.steps import layout_step, published_step

A = "a" * 64
B = "b" * 64


class LightningLastTest(unittest.TestCase):
    def test_last_ckpt_linking_to_a_step_file_gives_its_step(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "epoch=1-step=200.ckpt", "sha256": B}]
        self.assertEqual(published_step(files, symlinks=[{"path": "last.ckpt", "target": "epoch=1-step=200.ckpt"}]), (200, "lightning"))

    def test_last_ckpt_with_the_bytes_of_a_step_file_gives_its_step(self):
        files = [{"path": "ckpts/epoch=0-step=100.ckpt", "sha256": A}, {"path": "ckpts/last.ckpt", "sha256": A}]
        self.assertEqual(published_step(files), (100, "lightning"))

    def test_last_ckpt_alone_is_unknown(self):
        self.assertEqual(published_step([{"path": "last.ckpt", "sha256": A}]), (None, None))
        self.assertEqual(layout_step(["last.ckpt"]), (None, None))


C = "c" * 64


class LightningLastDecidesTest(unittest.TestCase):
    """brk20 F4: ModelCheckpoint(monitor="val_loss", save_top_k=1, save_last=True) keeps the best
    model's step file while last.ckpt, the file a ckpt_path="last" resume loads, moves on."""

    def test_best_step_file_and_a_last_ckpt_copy_of_newer_content_is_unknown(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "last.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (None, None))

    def test_last_ckpt_linking_to_the_step_300_file_is_300(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "epoch=2-step=300.ckpt", "sha256": C}]
        self.assertEqual(published_step(files, symlinks=[{"path": "last.ckpt", "target": "epoch=2-step=300.ckpt"}]),
                         (300, "lightning"))

    def test_last_ckpt_with_the_bytes_of_the_step_300_file_is_300(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "epoch=2-step=300.ckpt", "sha256": C},
                 {"path": "last.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (300, "lightning"))

    def test_last_ckpt_holding_the_best_not_the_newest_step_file_is_that_step(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "epoch=2-step=300.ckpt", "sha256": C},
                 {"path": "last.ckpt", "sha256": A}]
        self.assertEqual(published_step(files), (100, "lightning"))

    def test_no_last_file_is_the_highest_step(self):
        files = [{"path": "ckpts/epoch=0-step=100.ckpt", "sha256": A}, {"path": "ckpts/epoch=2-step=300.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (300, "lightning"))

    def test_last_v1_ckpt_is_a_last_file_too(self):
        best = {"path": "epoch=0-step=100.ckpt", "sha256": A}
        self.assertEqual(published_step([best, {"path": "last-v1.ckpt", "sha256": C}]), (None, None))
        self.assertEqual(published_step([best, {"path": "epoch=2-step=300.ckpt", "sha256": C}, {"path": "last-v1.ckpt", "sha256": C}]),
                         (300, "lightning"))
        self.assertEqual(published_step([best], symlinks=[{"path": "last-v2.ckpt", "target": "epoch=2-step=300.ckpt"}]),
                         (300, "lightning"))

    def test_names_only_like_last_are_not_last_files(self):
        files = [{"path": "epoch=0-step=100.ckpt", "sha256": A}, {"path": "last.ckpt.tmp", "sha256": C},
                 {"path": "my-last.ckpt", "sha256": C}, {"path": "last-v1a.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (100, "lightning"))

    def test_several_folders_give_the_highest_knowable_step(self):
        files = [{"path": "a/epoch=0-step=100.ckpt", "sha256": A}, {"path": "a/last.ckpt", "sha256": A},
                 {"path": "b/epoch=2-step=300.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (300, "lightning"))

    def test_any_unknowable_last_file_makes_the_step_unknown(self):
        files = [{"path": "a/epoch=2-step=300.ckpt", "sha256": C}, {"path": "a/last.ckpt", "sha256": C},
                 {"path": "b/epoch=0-step=100.ckpt", "sha256": A}, {"path": "b/last.ckpt", "sha256": B}]
        self.assertEqual(published_step(files), (None, None))
        same_folder = [{"path": "epoch=2-step=300.ckpt", "sha256": C}, {"path": "last.ckpt", "sha256": C},
                       {"path": "last-v1.ckpt", "sha256": B}]
        self.assertEqual(published_step(same_folder), (None, None))

    def test_hugging_face_folders_still_win(self):
        files = [{"path": "checkpoint-40/trainer_state.json", "sha256": A}, {"path": "epoch=0-step=100.ckpt", "sha256": B},
                 {"path": "last.ckpt", "sha256": C}]
        self.assertEqual(published_step(files), (40, "huggingface"))


if __name__ == "__main__":
    unittest.main()
