// Prometheus text exposition parsing and the arithmetic the Live page needs: sums of a
// series per model, and histogram_quantile over bucket deltas.

/**
 * Parses the text exposition into [{name, labels, value}] (comments and timestamps
 * dropped). Label values may hold escaped quotes, backslashes and newlines.
 */
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    let name;
    let rest;
    const labels = {};
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      let i = brace + 1;
      while (i < line.length && line[i] !== "}") {
        const eq = line.indexOf("=", i);
        const key = line.slice(i, eq).trim().replace(/^,/, "").trim();
        let j = eq + 2; // past ="
        let value = "";
        while (j < line.length && line[j] !== '"') {
          if (line[j] === "\\") {
            j++;
            value += line[j] === "n" ? "\n" : line[j];
          } else {
            value += line[j];
          }
          j++;
        }
        labels[key] = value;
        i = j + 1;
        while (line[i] === "," || line[i] === " ") i++;
      }
      rest = line.slice(i + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = parseValue(rest.split(/\s+/)[0]);
    if (name && !Number.isNaN(value)) samples.push({ name, labels, value });
  }
  return samples;
}

function parseValue(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

/**
 * Whether a sample's name is `base` (given without `_total`): the metrics library may
 * render a counter with or without the `_total` suffix, so both count.
 */
export function isSeries(name, base) {
  return name === base || name === `${base}_total`;
}

/**
 * histogram_quantile: the q-quantile of a histogram given as [[le, cumulative count]]
 * (sorted by le, the last +Inf), interpolating linearly inside the bucket the rank falls
 * in, as Prometheus does. Null when the histogram is empty.
 */
export function histogramQuantile(q, buckets) {
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let previousLe = 0;
  let previousCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      // The rank is in the open-ended bucket: the best answer is its lower bound.
      if (le === Infinity) return previousLe;
      if (count === previousCount) return le;
      return previousLe + (le - previousLe) * ((rank - previousCount) / (count - previousCount));
    }
    previousLe = le;
    previousCount = count;
  }
  return previousLe;
}
