"""joblog.compact: what one log segment stores of the bytes job.log gained."""

import unittest

from runctl_agent.joblog import compact, last_state


class CompactTest(unittest.TestCase):
    def test_whole_lines_ship_and_a_plain_unfinished_line_waits(self):
        self.assertEqual(compact(b"a\nb\npartial", final=False, full=False), (b"a\nb\n", 4))
        self.assertEqual(compact(b"partial", final=False, full=False), (b"", 0))

    def test_the_end_of_an_attempt_ships_the_unfinished_line(self):
        self.assertEqual(compact(b"a\nlast words", final=True, full=False), (b"a\nlast words", 12))

    def test_a_carriage_return_line_keeps_its_last_state(self):
        data = b"\r 0%|\r 50%|#\r100%|##\n"
        self.assertEqual(compact(data, final=False, full=False), (b"100%|##\n", len(data)))

    def test_an_unfinished_bar_ships_its_latest_state_marked_overwritable(self):
        data = b"epoch 1\n\r 10%|#\r 20%|##"
        self.assertEqual(compact(data, final=False, full=False), (b"epoch 1\n 20%|##\r", len(data)))
        self.assertEqual(compact(b"\r 20%|##", final=True, full=False), (b" 20%|##", 8))

    def test_crlf_line_endings_keep_their_text(self):
        self.assertEqual(compact(b"windows\r\n", final=False, full=False), (b"windows\n", 9))
        self.assertEqual(last_state(b"a\rb\r\r"), b"b")


if __name__ == "__main__":
    unittest.main()
