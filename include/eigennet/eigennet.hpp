// eigennet: a header-only C++17 neural-network library on Eigen tensors and OpenMP.
// This umbrella header includes the whole library (the CMake target eigennet::eigennet): the
// neural-network part (nn.hpp, which needs only Eigen and OpenMP) and what reads image files and
// writes PNG plots (which also needs the image libraries: see README, "Using the library").
#pragma once

#include "nn.hpp"

#include "data/image.hpp"
#include "data/image_folder.hpp"
#include "data/stb.hpp"

#include "metrics/report_files.hpp"

#include "detect/anchors.hpp"
#include "detect/annotate.hpp"
#include "detect/face_crop.hpp"
#include "detect/face_detector.hpp"
#include "detect/picture_faces.hpp"

#include "plot/canvas.hpp"
#include "plot/color.hpp"
#include "plot/confusion_matrix_png.hpp"
#include "plot/curves_png.hpp"

#include "train/curves_png.hpp"
