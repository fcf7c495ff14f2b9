// Metrics (confusion matrix, precision / recall / F1, top-k), the text report and table, and the
// JSON writer. Expected values are worked out by hand in the comments.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <eigennet/io/json.hpp>
#include <eigennet/metrics/classification.hpp>
#include <eigennet/metrics/report.hpp>

using namespace eigennet;

namespace {

// Ten samples over four classes: "cat" (2) is never predicted, "fish" (3) never occurs.
//   true \ pred  ant  bee  cat  fish
//   ant            2    1    0     1     support 4
//   bee            1    3    0     0     support 4
//   cat            1    1    0     0     support 2
//   fish           0    0    0     0     support 0
//   predicted      4    5    0     1
const std::vector<int32_t> kLabels{0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
const std::vector<int32_t> kPredictions{0, 0, 1, 3, 1, 1, 1, 0, 0, 1};
const std::vector<std::string> kNames{"ant", "bee", "cat", "fish"};

ClassificationMetrics example_metrics() {
  return classification_metrics(ConfusionMatrix(4, kLabels, kPredictions), kNames);
}

using testing::fresh_directory;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

TEST_CASE("ConfusionMatrix counts rows as true classes and columns as predictions") {
  const ConfusionMatrix cm(4, kLabels, kPredictions);
  CHECK(cm(0, 0) == 2);
  CHECK(cm(0, 1) == 1);
  CHECK(cm(0, 3) == 1);
  CHECK(cm(1, 0) == 1);
  CHECK(cm(1, 1) == 3);
  CHECK(cm(2, 0) == 1);
  CHECK(cm(2, 1) == 1);
  CHECK(cm(2, 2) == 0);
  CHECK(cm.support(0) == 4);
  CHECK(cm.support(2) == 2);
  CHECK(cm.support(3) == 0);
  CHECK(cm.predicted(0) == 4);
  CHECK(cm.predicted(1) == 5);
  CHECK(cm.predicted(2) == 0);
  CHECK(cm.predicted(3) == 1);
  CHECK(cm.correct() == 5);
  CHECK(cm.total() == 10);
  const std::vector<std::vector<int64_t>> rows = cm.rows();
  // The literal {1, 1, 0, 0} read back as 1 1 1 1 under GCC 12.2's AVX-512 SLP vectorizer (see
  // CMakeLists.txt): this check catches that miscompile too.
  const std::vector<std::vector<int64_t>> expected_rows{{2, 1, 0, 1}, {1, 3, 0, 0}, {1, 1, 0, 0}, {0, 0, 0, 0}};
  CHECK(rows == expected_rows);

  ConfusionMatrix twice = cm;
  twice.add(cm);
  CHECK(twice(1, 1) == 6);
  CHECK(twice.total() == 20);

  ConfusionMatrix bad(3);
  CHECK_THROWS_WITH_AS(bad.add(3, 0), doctest::Contains("true class 3 is outside [0, 3)"), Error);
  CHECK_THROWS_WITH_AS(bad.add(0, -1), doctest::Contains("predicted class -1"), Error);
  CHECK_THROWS_WITH_AS(bad.add({0, 1}, {0}), doctest::Contains("2 labels but 1 predictions"), Error);
  CHECK_THROWS_AS(bad.add(ConfusionMatrix(4)), Error);
  CHECK_THROWS_AS(ConfusionMatrix(0), Error);
}

TEST_CASE("Precision, recall and F1 follow scikit-learn, including empty classes") {
  const ClassificationMetrics m = example_metrics();
  REQUIRE(m.per_class.size() == 4);
  CHECK(m.num_samples() == 10);
  CHECK(m.accuracy == doctest::Approx(0.5));  // 5 of 10 on the diagonal

  // ant: TP 2 of 4 predicted, 2 of 4 true.
  CHECK(m.per_class[0].precision == doctest::Approx(0.5));
  CHECK(m.per_class[0].recall == doctest::Approx(0.5));
  CHECK(m.per_class[0].f1 == doctest::Approx(0.5));
  CHECK(m.per_class[0].support == 4);
  // bee: TP 3 of 5 predicted, 3 of 4 true; F1 = 2 * 0.6 * 0.75 / 1.35 = 2/3.
  CHECK(m.per_class[1].precision == doctest::Approx(0.6));
  CHECK(m.per_class[1].recall == doctest::Approx(0.75));
  CHECK(m.per_class[1].f1 == doctest::Approx(2.0 / 3.0));
  CHECK(m.per_class[1].support == 4);
  // cat: never predicted, so precision is 0/0 -> 0 (zero_division); recall 0 of 2.
  CHECK(m.per_class[2].precision == 0.0);
  CHECK(m.per_class[2].recall == 0.0);
  CHECK(m.per_class[2].f1 == 0.0);
  CHECK(m.per_class[2].support == 2);
  // fish: predicted once, wrongly (precision 0/1); no support, so recall 0/0 -> 0.
  CHECK(m.per_class[3].precision == 0.0);
  CHECK(m.per_class[3].recall == 0.0);
  CHECK(m.per_class[3].f1 == 0.0);
  CHECK(m.per_class[3].support == 0);

  // Macro: plain means over all four classes, the empty ones included.
  CHECK(m.macro_avg.precision == doctest::Approx((0.5 + 0.6) / 4));
  CHECK(m.macro_avg.recall == doctest::Approx((0.5 + 0.75) / 4));
  CHECK(m.macro_avg.f1 == doctest::Approx((0.5 + 2.0 / 3.0) / 4));
  CHECK(m.macro_avg.support == 10);
  // Weighted by support 4, 4, 2, 0.
  CHECK(m.weighted_avg.precision == doctest::Approx((0.5 * 4 + 0.6 * 4) / 10));
  CHECK(m.weighted_avg.recall == doctest::Approx((0.5 * 4 + 0.75 * 4) / 10));
  CHECK(m.weighted_avg.f1 == doctest::Approx((0.5 * 4 + 2.0 / 3.0 * 4) / 10));
  CHECK(m.weighted_avg.support == 10);

  CHECK_THROWS_WITH_AS(classification_metrics(ConfusionMatrix(2), {"a"}), doctest::Contains("1 class names for 2"),
                       Error);
  CHECK_THROWS_WITH_AS(classification_metrics(ConfusionMatrix(2), {"a", "a"}), doctest::Contains("unique"), Error);
  const ClassificationMetrics unnamed = classification_metrics(ConfusionMatrix(2));
  CHECK(unnamed.class_names == std::vector<std::string>{"0", "1"});
}

TEST_CASE("No samples at all gives zeros, not NaN") {
  const ClassificationMetrics m = classification_metrics(ConfusionMatrix(3));
  CHECK(m.accuracy == 0.0);
  CHECK(m.macro_avg.f1 == 0.0);
  CHECK(m.weighted_avg.precision == 0.0);
  CHECK(m.weighted_avg.support == 0);
}

TEST_CASE("Top-k accuracy and argmax rank ties to the lower class and NaN last") {
  // Row 0: true 2, class 1 scores higher             -> rank 2 (top-2 hit)
  // Row 1: true 0, highest                           -> rank 1
  // Row 2: true 0, classes 1 and 2 score higher      -> rank 3
  // Row 3: true 1, tied with class 0 (lower index)   -> rank 2
  const Tensor scores(Shape{4, 3}, {0.1f, 0.7f, 0.2f,  //
                                    0.5f, 0.3f, 0.2f,  //
                                    0.2f, 0.3f, 0.5f,  //
                                    0.4f, 0.4f, 0.2f});
  const std::vector<int32_t> labels{2, 0, 0, 1};
  CHECK(argmax_predictions(scores) == std::vector<int32_t>{1, 0, 2, 0});
  CHECK(top_k_accuracy(scores, labels, 1) == doctest::Approx(0.25));
  CHECK(top_k_accuracy(scores, labels, 2) == doctest::Approx(0.75));
  CHECK(top_k_accuracy(scores, labels, 3) == doctest::Approx(1.0));
  CHECK(top_k_accuracy(scores, labels, 7) == doctest::Approx(1.0));
  CHECK_THROWS_AS(top_k_accuracy(scores, labels, 0), Error);
  CHECK_THROWS_WITH_AS(top_k_accuracy(scores, {2, 0, 0, 3}, 1), doctest::Contains("label 3 of sample 3"), Error);
  CHECK_THROWS_WITH_AS(top_k_accuracy(scores, {2, 0}, 1), doctest::Contains("2 labels for 4 rows"), Error);
  CHECK_THROWS_AS(argmax_predictions(Tensor(Shape{4})), Error);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor with_nan(Shape{2, 3}, {nan, 0.1f, 0.2f, 0.3f, nan, 0.1f});
  CHECK(argmax_predictions(with_nan) == std::vector<int32_t>{2, 0});
  // True class scored NaN ranks last; a NaN elsewhere does not push the true class down.
  CHECK(top_k_accuracy(with_nan, {0, 2}, 2) == doctest::Approx(0.5));
  CHECK(top_k_accuracy(with_nan, {0, 2}, 3) == doctest::Approx(1.0));

  const ClassificationMetrics m = evaluate_classifier(scores, labels, {"x", "y", "z"}, {1, 2});
  CHECK(m.accuracy == doctest::Approx(0.25));
  // Predictions 1, 0, 2, 0 for labels 2, 0, 0, 1.
  CHECK(m.confusion(2, 1) == 1);
  CHECK(m.confusion(0, 0) == 1);
  CHECK(m.confusion(0, 2) == 1);
  CHECK(m.confusion(1, 0) == 1);
  REQUIRE(m.top_k_accuracy.size() == 2);
  CHECK(m.top_k_accuracy[0].first == 1);
  CHECK(m.top_k_accuracy[0].second == doctest::Approx(m.accuracy));
  CHECK(m.top_k_accuracy[1].first == 2);
  CHECK(m.top_k_accuracy[1].second == doctest::Approx(0.75));
}

TEST_CASE("The text report has scikit-learn's layout") {
  const std::string report = classification_report(example_metrics(), 4);
  // Names are right-aligned to the width of "weighted avg" (12); each column is " %9".
  const std::string expected =
      "              precision    recall  f1-score   support\n"
      "\n"
      "         ant     0.5000    0.5000    0.5000         4\n"
      "         bee     0.6000    0.7500    0.6667         4\n"
      "         cat     0.0000    0.0000    0.0000         2\n"
      "        fish     0.0000    0.0000    0.0000         0\n"
      "\n"
      "    accuracy                         0.5000        10\n"
      "   macro avg     0.2750    0.3125    0.2917        10\n"
      "weighted avg     0.4400    0.5000    0.4667        10\n";
  CHECK(report == expected);

  // A long class name widens the first column; 2 digits.
  ClassificationMetrics long_names =
      classification_metrics(ConfusionMatrix(2, {0, 1, 1}, {0, 1, 0}), {"short", "a_much_longer_name"});
  const std::string two_digits = classification_report(long_names, 2);
  CHECK(two_digits.find("\n             short       0.50      1.00      0.67         1\n") != std::string::npos);
  CHECK(two_digits.find("\na_much_longer_name       1.00      0.50      0.67         2\n") != std::string::npos);
  CHECK(two_digits.find("\n          accuracy                           0.67         3\n") != std::string::npos);
}

TEST_CASE("The confusion matrix table aligns counts under class names") {
  const std::string table = confusion_matrix_table(example_metrics());
  const std::string expected =
      "true \\ predicted  ant  bee  cat  fish\n"
      "             ant    2    1    0     1\n"
      "             bee    1    3    0     0\n"
      "             cat    1    1    0     0\n"
      "            fish    0    0    0     0\n";
  CHECK(table == expected);
  CHECK_THROWS_AS(confusion_matrix_table(ConfusionMatrix(2), {"only one"}), Error);
}

TEST_CASE("JSON strings are escaped and numbers are finite") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(json_quote("C:\\dir\\file") == "\"C:\\\\dir\\\\file\"");
  CHECK(json_quote("a\nb\tc\rd\be\ff") == "\"a\\nb\\tc\\rd\\be\\ff\"");
  CHECK(json_quote(std::string("nul\0x\x01\x1f", 7)) == "\"nul\\u0000x\\u0001\\u001f\"");
  CHECK(json_quote("caf\xc3\xa9 \xe2\x82\xac") == "\"caf\xc3\xa9 \xe2\x82\xac\"");  // valid UTF-8 passes
  CHECK(json_quote("bad\xff byte") == "\"bad\\ufffd byte\"");
  CHECK(json_quote("cut \xe2\x82") == "\"cut \\ufffd\\ufffd\"");        // truncated sequence
  CHECK(json_quote("over\xc0\xaf") == "\"over\\ufffd\\ufffd\"");        // overlong '/'
  CHECK(json_quote("surrogate\xed\xa0\x80") == "\"surrogate\\ufffd\\ufffd\\ufffd\"");

  CHECK(json_number(0.5) == "0.5");
  CHECK(json_number(-2.0) == "-2");
  CHECK(json_number(0.1) == "0.1");
  CHECK(std::stod(json_number(1.0 / 3.0)) == 1.0 / 3.0);  // shortest form still reads back exactly
  CHECK(std::stod(json_number(6.02214076e23)) == 6.02214076e23);
  CHECK(json_number(std::numeric_limits<double>::quiet_NaN()) == "null");
  CHECK(json_number(std::numeric_limits<double>::infinity()) == "null");
  CHECK(json_number(-std::numeric_limits<double>::infinity()) == "null");

  CHECK(Json(0.1f).dump() == "0.1");  // not 0.100000001490116
  CHECK(Json(std::numeric_limits<float>::quiet_NaN()).dump() == "null");
  CHECK(Json(int64_t{-9007199254740993}).dump() == "-9007199254740993");  // exact, beyond double
  CHECK(std::stod(Json(uint64_t{18446744073709551615ull}).dump()) == 18446744073709551616.0);  // as a double
  CHECK(Json(true).dump() == "true");
  CHECK(Json(false).dump() == "false");
  CHECK(Json(nullptr).dump() == "null");
  CHECK(Json("text").dump() == "\"text\"");
}

TEST_CASE("JSON objects keep insertion order and nest") {
  Json j = Json::object();
  j["name"] = "run \"7\"";
  j["epochs"] = 3;
  j["loss"] = std::vector<double>{1.5, 0.75, std::nan("")};
  j["config"]["lr"] = 0.001;
  j["config"]["augment"] = true;
  j["empty_list"] = Json::array();
  j["empty_object"] = Json::object();
  j["matrix"] = std::vector<std::vector<int>>{{1, 2}, {3, 4}};
  j["epochs"] = 4;  // replaces in place, keeps its position

  CHECK(j.dump(-1) ==
        "{\"name\":\"run \\\"7\\\"\",\"epochs\":4,\"loss\":[1.5,0.75,null],\"config\":{\"lr\":0.001,"
        "\"augment\":true},\"empty_list\":[],\"empty_object\":{},\"matrix\":[[1,2],[3,4]]}");
  CHECK(j.dump(2) ==
        "{\n"
        "  \"name\": \"run \\\"7\\\"\",\n"
        "  \"epochs\": 4,\n"
        "  \"loss\": [1.5, 0.75, null],\n"
        "  \"config\": {\n"
        "    \"lr\": 0.001,\n"
        "    \"augment\": true\n"
        "  },\n"
        "  \"empty_list\": [],\n"
        "  \"empty_object\": {},\n"
        "  \"matrix\": [\n"
        "    [1, 2],\n"
        "    [3, 4]\n"
        "  ]\n"
        "}");
  CHECK(Json::parse(j.dump(2)).dump(-1) == j.dump(-1));
  CHECK(j.find("config")->find("lr")->as_double() == 0.001);
  CHECK(j.find("missing") == nullptr);

  Json number = 1.5;
  CHECK_THROWS_WITH_AS(number["key"], doctest::Contains("non-object"), Error);
  CHECK_THROWS_AS(number.push_back(1), Error);
}

TEST_CASE("Json::parse reads every JSON type and refuses malformed text, naming source and byte") {
  const Json j = Json::parse(R"( {"a": [1, -2.5e3, 0.1, true, false, null, "x\u00e9\n\ud83d\ude00"],
                                  "big": 9223372036854775807, "small": -9223372036854775808, "e": {}} )",
                             "inline");
  REQUIRE(j.is_object());
  const Json& a = *j.find("a");
  REQUIRE(a.size() == 7);
  CHECK(a.at(0).as_integer() == 1);
  CHECK(a.at(1).as_double() == -2500.0);
  CHECK(a.at(2).as_double() == 0.1);
  CHECK(a.at(3).as_bool());
  CHECK_FALSE(a.at(4).as_bool());
  CHECK(a.at(5).is_null());
  CHECK(a.at(6).as_string() == "x\xc3\xa9\n\xf0\x9f\x98\x80");
  CHECK(j.find("big")->as_integer() == INT64_MAX);
  CHECK(j.find("small")->as_integer() == INT64_MIN);
  CHECK(j.find("e")->is_object());
  // Doubles survive a round trip exactly (the writer's shortest form reads back to the same bits).
  for (double x : {1.0 / 3.0, 0.68470001220703125, 1e-300, 123456789.0123456789, 228582609216677609472.0,
                   -1e19, 9.3e18}) {
    Json o = Json::object();
    o["x"] = x;
    CHECK(Json::parse(o.dump()).find("x")->as_double() == x);
  }
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "expected a value"},           {"[1,]", "unexpected character ']'"},
      {"{\"a\":1,\"a\":2}", "duplicate key 'a'"}, {"01", "leading zeros"},
      {"1.", "after the decimal point"}, {"1e", "exponent"},
      {"\"abc", "unterminated string"},  {"tru", "unexpected character 't'"},
      {"[1] 2", "unexpected data"},      {"99999999999999999999", "64-bit range"},
      {"1e999", "double range"},         {"\"\\ud800\"", "low surrogate"},
      {"\"\xff\"", "invalid UTF-8"},     {std::string(40, '[') + std::string(40, ']'), "nesting deeper"}};
  for (const auto& [text, message] : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(Json::parse(text, "bad.json"), doctest::Contains(message.c_str()), Error);
    CHECK_THROWS_WITH_AS(Json::parse(text, "bad.json"), doctest::Contains("bad.json: invalid JSON at byte"), Error);
  }
  JsonParseOptions limited;
  limited.max_values = 3;
  CHECK_THROWS_WITH_AS(Json::parse("[1, 2, 3]", "x", limited), doctest::Contains("more than 3 values"), Error);
  CHECK(Json::parse("[1, 2]", "x", limited).size() == 2);
}

TEST_CASE("Metrics JSON has the documented fields and parses back") {
  const ClassificationMetrics m = example_metrics();
  Json j = metrics_to_json(m);
  j["train_seconds"] = 12.25;  // callers add their own fields
  j["config"]["model"] = "mobilenet_v2";

  const std::string text = j.dump();
  const Json parsed = Json::parse(text);
  CHECK(parsed.dump() == text);

  CHECK(parsed.find("accuracy")->as_double() == doctest::Approx(0.5));
  CHECK(parsed.find("macro_f1")->as_double() == doctest::Approx((0.5 + 2.0 / 3.0) / 4));
  CHECK(parsed.find("weighted_f1")->as_double() == doctest::Approx((0.5 * 4 + 2.0 / 3.0 * 4) / 10));
  CHECK(parsed.find("num_samples")->as_integer() == 10);
  const Json& classes = *parsed.find("classes");
  REQUIRE(classes.size() == 4);
  for (size_t c = 0; c < 4; ++c) CHECK(classes.at(c).as_string() == kNames[c]);
  CHECK(parsed.find("precision")->at(1).as_double() == doctest::Approx(0.6));
  CHECK(parsed.find("recall")->at(1).as_double() == doctest::Approx(0.75));
  CHECK(parsed.find("f1")->at(2).as_double() == 0.0);
  CHECK(parsed.find("support")->at(3).as_integer() == 0);
  const Json& bee = *parsed.find("per_class")->find("bee");
  CHECK(bee.find("precision")->as_double() == doctest::Approx(0.6));
  CHECK(bee.find("recall")->as_double() == doctest::Approx(0.75));
  CHECK(bee.find("f1")->as_double() == doctest::Approx(2.0 / 3.0));
  CHECK(bee.find("support")->as_integer() == 4);
  const Json& cm = *parsed.find("confusion_matrix");
  REQUIRE(cm.size() == 4);
  CHECK(cm.at(0).dump(-1) == "[2,1,0,1]");  // row = true class "ant"
  CHECK(cm.at(2).dump(-1) == "[1,1,0,0]");
  CHECK(parsed.find("train_seconds")->as_double() == 12.25);
  CHECK(parsed.find("config")->find("model")->as_string() == "mobilenet_v2");
  CHECK(parsed.find("top_k_accuracy") == nullptr);  // only when computed from scores
}

TEST_CASE("save_json writes atomically and names the path on failure") {
  const auto dir = fresh_directory("test_metrics_json");
  const std::string path = (dir / "metrics.json").string();
  Json j = metrics_to_json(example_metrics());
  save_json(path, j);
  CHECK(read_text(path) == j.dump() + "\n");
  j["extra"] = 1;
  save_json(path, j);  // replaces the old file
  CHECK(read_text(path) == j.dump() + "\n");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += entry.is_regular_file();
  CHECK(files == 1);  // no temporary file left behind

  const std::string missing = (dir / "no_such_dir" / "metrics.json").string();
  CHECK_THROWS_WITH_AS(save_json(missing, j), doctest::Contains(missing.c_str()), Error);
  CHECK_FALSE(std::filesystem::exists(dir / "no_such_dir"));
  std::filesystem::remove_all(dir);
}
