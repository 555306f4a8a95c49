"""Facial landmarks: the 68-point iBUG scheme, dlib detection, user landmark files, a content-keyed cache.

Coordinates are (x, y) pixels of the stored image with pixel centres at integers: (x, y) = (j, i) is the
centre of ``image[i, j]``; a horizontal mirror maps x to W - 1 - x.
"""
