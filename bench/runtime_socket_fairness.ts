const [port, n, secs] = Deno.args.map(Number);
const got = new Array(n).fill(0);
let stop = false;
const conns = await Promise.all(
  Array.from({ length: n }, () => Deno.connect({ hostname: "127.0.0.1", port })),
);
conns.forEach(async (c, i) => {
  const buf = new Uint8Array(64 * 1024);
  while (!stop) {
    const k = await c.read(buf);
    if (k === null) return;
    got[i] += k;
  }
});
await new Promise((r) => setTimeout(r, 1000));
const base = [...got];
await new Promise((r) => setTimeout(r, secs * 1000));
const d = got.map((g, i) => g - base[i]);
const sum = d.reduce((a, b) => a + b, 0);
const jain = sum * sum / (n * d.reduce((a, b) => a + b * b, 0));
d.sort((a, b) => a - b);
console.log(
  `n=${n} total ${(sum * 8 / secs / 1e9).toFixed(2)} Gbit/s jain ${jain.toFixed(3)} min ${d[0]} p10 ${
    d[Math.floor(n / 10)]
  } p50 ${d[n >> 1]} max ${d[n - 1]} zeros ${d.filter((x) => x === 0).length}`,
);
Deno.exit(0);
