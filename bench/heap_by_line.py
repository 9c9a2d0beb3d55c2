"""heap_by_line.py OUT.txt [DEPTH]: the live heap of heaptrack_print's "MEMORY LEAKS" listing
(bench/heap_files.sh) summed per allocating line of logcatch's own source (the first frame in
src/ of this repository; DEPTH: that many such frames), largest first; TOP=N rows (45)."""
import re, sys, os, collections
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + '/'
path = sys.argv[1]; depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
units = {'B':1,'K':1e3,'M':1e6,'G':1e9}
def size(s):
    m = re.match(r'([\d.]+)([KMG]?)', s)
    return float(m.group(1)) * units.get(m.group(2) or 'B', 1)
lines = open(path, errors='replace').read().split('\n')
start = next(i for i,l in enumerate(lines) if l.startswith('MEMORY LEAKS'))
end = next((i for i,l in enumerate(lines) if i > start and l.startswith(('MOST ', 'PEAK', 'total runtime'))), len(lines))
recs = []  # (bytes, calls, frames)
cur = None
top = []
def flush():
    if cur: recs.append(cur)
for l in lines[start+1:end]:
    m = re.match(r'^(\s*)([\d.]+[KMG]?) leaked over (\d+) calls from:?$', l)
    if m:
        if not l.rstrip().endswith(':'):
            flush(); cur = None; top = []; mode = 'top'
        else:
            flush(); cur = [size(m.group(2)), int(m.group(3)), list(top), []]; mode='sub'
        continue
    s = l.strip()
    if not s: continue
    if mode == 'top':
        top.append(s)
    else:
        cur[3].append(s)
flush()
def ours(f):
    m = re.match(r'at (src/\S+?):(\d+)', f)
    if not m: return None
    p = m.group(1)
    if p in ('src/lib.rs','src/main.rs') : return None
    if os.path.exists(REPO + p): return f'{p}:{m.group(2)}'
    return None
agg = collections.defaultdict(lambda: [0,0])
for b, c, top, frames in recs:
    fs = top + frames
    keys = []
    prev = None
    for f in fs:
        if f.startswith('at '):
            o = ours(f)
            if o: keys.append(f'{prev} {o}')
        elif not f.startswith('in '):
            prev = f
        if len(keys) >= depth: break
    k = ' <- '.join(keys) if keys else 'other: ' + ' | '.join(x for x in fs[:12] if not x.startswith('in '))[:300]
    agg[k][0] += b; agg[k][1] += c
tot = sum(v[0] for v in agg.values())
print(f'total {tot/1e6:.2f} MB')
for k, (b, c) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:int(os.environ.get('TOP', 45))]:
    print(f'{b/1e6:8.2f} MB {c:8d} calls {b/max(c,1):8.0f} B/call  {k}')
