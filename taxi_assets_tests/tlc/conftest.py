"""The tlc source's tests run in their own pytest session with TAXI_SOURCE=tlc (`make test` runs
it after the main one; without it they are skipped, saying so): the source fixes the grid and the
schemas when the code loads. The shared `mirror` fixture then serves the TLC's layout and answers
403 for a month not out."""
