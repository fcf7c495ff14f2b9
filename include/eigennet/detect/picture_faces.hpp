// From a picture to the faces a classifier sees: what predict, evaluate and extract_features
// share. A picture that already is a face crop (FER-2013's are 48x48) is classified whole; any
// other picture goes through the face detector, and each face found is cut out as the
// classifier's training data was (face_crop.hpp).
#pragma once

#include <algorithm>
#include <vector>

#include "../data/image.hpp"
#include "face_crop.hpp"
#include "face_detector.hpp"

namespace eigennet {

// Pictures no larger than this on either side are taken as face crops: FER-2013's are 48x48,
// and BlazeFace would see such a face at a fifth of its 256x256 input, where it finds little.
inline constexpr int face_crop_max_side = 64;

inline bool is_face_crop(const Image& picture) {
  return picture.width <= face_crop_max_side && picture.height <= face_crop_max_side;
}

// One face of a picture, in the picture's pixels.
struct PictureFace {
  Box box;                  // the detector's box; the whole picture when not detected
  Box crop;                 // the square that is classified; the whole picture when not detected
  float score = 1;          // the detector's score; 1 when not detected
  bool detected = false;    // false: the whole picture is the face
  FaceDetection detection;  // valid when detected
};

// The whole picture as its one face.
inline PictureFace whole_picture_face(const Image& picture) {
  PictureFace face;
  face.box = face.crop = {0, 0, static_cast<float>(picture.width), static_cast<float>(picture.height)};
  return face;
}

// The faces of a picture, best score first: the whole picture when it is a face crop or when
// there is no detector, else every face the detector finds (none: an empty list).
inline std::vector<PictureFace> picture_faces(const Image& picture, FaceDetector* detector,
                                              const FaceCropOptions& crop = {}) {
  if (detector == nullptr || is_face_crop(picture)) return {whole_picture_face(picture)};
  std::vector<PictureFace> faces;
  for (const FaceDetection& d : detector->detect(picture)) {
    PictureFace face;
    face.box = d.box;
    face.crop = face_crop_geometry(d, crop).square();
    face.score = d.score;
    face.detected = true;
    face.detection = d;
    faces.push_back(face);
  }
  return faces;
}

// The face as a classifier's input: height x width x channels (1 or 3). A detected face is cut
// out with `crop` (grayscale by default, then repeated into 3 channels, as a grayscale FER-2013
// JPEG is decoded); a whole-picture face is the picture resized, as the image folders store it.
inline Image classifier_input(const Image& picture, const PictureFace& face, int height, int width, int channels,
                              const FaceCropOptions& crop = {}) {
  EIGENNET_CHECK(height > 0 && width > 0 && (channels == 1 || channels == 3),
                 "classifier_input: invalid input shape ", height, "x", width, "x", channels);
  EIGENNET_CHECK(picture.channels == 1 || picture.channels == 3, "classifier_input: pictures must have 1 or 3 channels, got ",
                 picture.channels);
  Image source;
  if (face.detected) {
    const Image square = face_crop(picture, face.detection, std::max(height, width), crop);
    source = square.height == height && square.width == width ? square : resize_image(square, height, width);
  } else {
    source = resize_image(picture, height, width);
  }
  if (source.channels == channels) return source;
  Image out;
  out.height = height;
  out.width = width;
  out.channels = channels;
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  const int64_t n = int64_t{height} * width;
  for (int64_t i = 0; i < n; ++i) {
    if (channels == 3) {  // gray -> RGB
      const uint8_t v = source.pixels[static_cast<size_t>(i)];
      for (int k = 0; k < 3; ++k) out.pixels[static_cast<size_t>(i * 3 + k)] = v;
    } else {  // RGB -> gray, BT.601 as the decoder's grayscale
      const uint8_t* p = source.pixels.data() + i * 3;
      out.pixels[static_cast<size_t>(i)] = detail::luma(p[0], p[1], p[2]);
    }
  }
  return out;
}

}  // namespace eigennet
