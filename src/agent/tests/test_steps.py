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


if __name__ == "__main__":
    unittest.main()
