//! Engine-loop tests on the tiny random model of the scheduler tests.
use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::GgmlDType;

use super::super::tests::{prompts, req, ByteVocab, Collect};
use super::*;
use crate::generate::generate;
use crate::model::tests::{tiny_config, tiny_model};
use crate::model::{Arch, Model};

fn start(m: Arc<Model>) -> EngineLoop {
    EngineLoop::spawn("test-loop", move |rx, st| run(&*m, &ByteVocab, rx, &st)).unwrap()
}

/// Wait for the end of a generation: its completions in request order and its figures.
fn collect(h: &Handle) -> Result<(Vec<Completion>, BatchStats, Vec<(usize, String)>)> {
    let mut done: Vec<Option<Completion>> = Vec::new();
    let mut pieces = Vec::new();
    loop {
        match h.events.recv_timeout(Duration::from_secs(60)).expect("the loop answers") {
            Event::Piece(i, t) => pieces.push((i, t)),
            Event::Finished(i, c) => {
                if done.len() <= i {
                    done.resize(i + 1, None);
                }
                done[i] = Some(c);
            }
            Event::Done(Ok(Output::Generated(s))) => {
                return Ok((done.into_iter().map(|c| c.unwrap()).collect(), s, pieces))
            }
            Event::Done(Ok(other)) => panic!("unexpected output {other:?}"),
            Event::Done(Err(e)) => return Err(e),
        }
    }
}

fn gen_work(requests: Vec<Request>, max_batch: usize) -> Work {
    Work::Generate { requests, max_batch, prefill_chunk: 16 }
}

#[test]
fn requests_joining_a_running_batch_get_their_lone_results() {
    let m = Arc::new(tiny_model(&tiny_config(Arch::Llama), 21, GgmlDType::Q4_1));
    let lp = start(m.clone());
    for temp in [0.0, 0.9] {
        let reqs: Vec<Request> = prompts().iter().enumerate().map(|(i, p)| req(p, 14 + 3 * i, temp, 5)).collect();
        // one long request first, the others submitted while it runs, one of them a batch of two
        let first = lp.submit(gen_work(vec![reqs[0].clone()], 8)).unwrap();
        match first.events.recv().unwrap() {
            Event::Piece(..) | Event::Finished(..) => {}
            Event::Done(r) => panic!("ended early: {r:?}"),
        }
        let second = lp.submit(gen_work(vec![reqs[1].clone(), reqs[2].clone()], 8)).unwrap();
        let third = lp.submit(gen_work(vec![reqs[3].clone()], 8)).unwrap();
        let mut got = collect(&first).unwrap().0;
        got.extend(collect(&second).unwrap().0);
        got.extend(collect(&third).unwrap().0);
        for (r, g) in reqs.into_iter().zip(&got) {
            let sched = SchedulerConfig { max_batch: 1, prefill_chunk: 16 };
            let (one, _) = generate(&*m, &ByteVocab, vec![r], &sched, &mut Collect::default()).unwrap();
            assert_eq!(one[0].tokens, g.tokens, "temperature {temp}");
            assert_eq!(one[0].text, g.text);
        }
    }
    assert!(lp.stats().decode_steps.load(Ordering::Relaxed) > 0);
}

#[test]
fn pieces_add_up_and_stats_count_one_request() {
    let m = Arc::new(tiny_model(&tiny_config(Arch::Llama), 23, GgmlDType::Q8_0));
    let lp = start(m.clone());
    let reqs: Vec<Request> = prompts().iter().map(|p| req(p, 10, 0.0, 0)).collect();
    let h = lp.submit(gen_work(reqs.clone(), 2)).unwrap();
    let (outs, stats, pieces) = collect(&h).unwrap();
    for (i, c) in outs.iter().enumerate() {
        let text: String = pieces.iter().filter(|(j, _)| *j == i).map(|(_, t)| t.as_str()).collect();
        assert_eq!(text, c.text);
    }
    let sched = SchedulerConfig { max_batch: 2, prefill_chunk: 16 };
    let (_, want) = generate(&*m, &ByteVocab, reqs, &sched, &mut Collect::default()).unwrap();
    assert_eq!((stats.decode_steps, stats.decode_tokens, stats.prefill_tokens), (want.decode_steps, want.decode_tokens, want.prefill_tokens));
}

#[test]
fn cancel_frees_the_sequence_and_others_go_on() {
    let m = Arc::new(tiny_model(&tiny_config(Arch::Llama), 25, GgmlDType::F32));
    let lp = start(m.clone());
    let mut long = req(&[1, 2, 3], 240, 0.0, 0); // the tiny model's context is 256
    long.params.ignore_eos = true;
    let other_req = req(&[7, 8, 9], 12, 0.0, 0);
    // cancelled at once: it ends as interrupted, long before its 240 tokens
    let h = lp.submit(gen_work(vec![long.clone()], 8)).unwrap();
    let other = lp.submit(gen_work(vec![other_req.clone()], 8)).unwrap();
    lp.cancel(&h);
    let mut pieces = 0;
    let end = loop {
        match h.events.recv_timeout(Duration::from_secs(30)).expect("the cancelled request ends") {
            Event::Piece(..) => pieces += 1,
            Event::Finished(..) => panic!("a cancelled request finished"),
            Event::Done(r) => break r,
        }
    };
    assert!(matches!(end, Err(Error::Interrupted)), "{end:?}");
    assert!(pieces < 240);
    // the other request is unaffected
    let (outs, _, _) = collect(&other).unwrap();
    let (want, _) = generate(&*m, &ByteVocab, vec![other_req], &SchedulerConfig::default(), &mut Collect::default()).unwrap();
    assert_eq!(outs[0].tokens, want[0].tokens);
    // a request whose receiver is gone is dropped at its first piece, its cache freed
    let before = lp.stats().decode_tokens.load(Ordering::Relaxed);
    drop(lp.submit(gen_work(vec![long], 8)).unwrap());
    let t0 = Instant::now();
    while lp.stats().submitted.load(Ordering::Relaxed) < 3 || lp.stats().running.load(Ordering::Relaxed) != 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the abandoned sequence is still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let decoded = lp.stats().decode_tokens.load(Ordering::Relaxed) - before;
    assert!(decoded <= 8, "{decoded} tokens decoded for an abandoned request");
}

#[test]
fn scoring_and_logits_through_the_loop_equal_direct_calls() {
    let m = Arc::new(tiny_model(&tiny_config(Arch::Llama), 24, GgmlDType::Q8_0));
    let lp = start(m.clone());
    let ps: Vec<Vec<u32>> = (0..(SCORE_SLICE as u32 + 7)).map(|i| vec![5, 6, 7, 8, 10 + i % 50, 3 + i % 7]).collect();
    let splits = vec![4; ps.len()];
    let choices = vec![vec![1u32], vec![2, 3, 4]];
    // a generation running at the same time
    let g = lp.submit(gen_work(vec![req(&[1, 2, 3], 20, 0.0, 0)], 8)).unwrap();
    let h = lp.submit(Work::Score { prompts: ps.clone(), splits: Some(splits.clone()), choices: choices.clone(), prefill_chunk: 512 }).unwrap();
    let sched = SchedulerConfig { max_batch: 1, prefill_chunk: 512 };
    let flag = AtomicBool::new(false);
    let want = score_choices_split(&*m, &ps, &splits, &choices, &sched, &CancelFlag(&flag)).unwrap();
    match h.events.recv().unwrap() {
        Event::Done(Ok(Output::Scores(s))) => assert_eq!(s, want),
        other => panic!("{other:?}"),
    }
    let h = lp.submit(Work::Score { prompts: vec![ps[0].clone()], splits: None, choices: choices.clone(), prefill_chunk: 512 }).unwrap();
    let want = score_choices(&*m, &ps[0], &choices, &sched, &CancelFlag(&flag)).unwrap();
    match h.events.recv().unwrap() {
        Event::Done(Ok(Output::Scores(s))) => assert_eq!(s, vec![want]),
        other => panic!("{other:?}"),
    }
    let h = lp.submit(Work::Logits { tokens: ps[1].clone(), prefill_chunk: 4 }).unwrap();
    let want = logits(&*m, &ps[1], 4, &CancelFlag(&flag)).unwrap();
    match h.events.recv().unwrap() {
        Event::Done(Ok(Output::Logits(l))) => assert_eq!(l, want),
        other => panic!("{other:?}"),
    }
    assert!(collect(&g).is_ok());
    // bad work is answered at once, and the loop goes on
    let h = lp.submit(gen_work(vec![req(&[], 5, 0.0, 0)], 8)).unwrap();
    assert!(matches!(h.events.recv().unwrap(), Event::Done(Err(Error::InvalidArgument(_)))));
    let h = lp.submit(Work::Score { prompts: vec![vec![1]], splits: None, choices: vec![], prefill_chunk: 8 }).unwrap();
    assert!(matches!(h.events.recv().unwrap(), Event::Done(Err(Error::InvalidArgument(_)))));
}

#[test]
fn logprobs_are_reported_per_token() {
    let m = Arc::new(tiny_model(&tiny_config(Arch::Llama), 26, GgmlDType::Q8_0));
    let lp = start(m.clone());
    let mut r = req(&[4, 5, 6], 8, 0.0, 0);
    r.params.logprobs = Some(3);
    let h = lp.submit(gen_work(vec![r.clone()], 8)).unwrap();
    let (outs, _, _) = collect(&h).unwrap();
    let l = outs[0].logprobs.as_ref().unwrap();
    assert_eq!(l.len(), outs[0].tokens.len());
    for (t, lp) in outs[0].tokens.iter().zip(l) {
        assert_eq!(lp.id, *t);
        assert_eq!(lp.top.len(), 3);
        // greedy: the chosen token is the most likely one
        assert_eq!(lp.top[0].0, *t);
        assert!(lp.logprob <= 0.0);
    }
    // the logprob of the first token is that of the prompt's last position
    let flag = AtomicBool::new(false);
    let full = logits(&*m, &r.prompt, 16, &CancelFlag(&flag)).unwrap();
    let vocab = m.config().vocab_size;
    let row = &full[2 * vocab..3 * vocab];
    assert!((crate::generate::sampler::log_prob(row, outs[0].tokens[0]) - l[0].logprob as f64).abs() < 1e-4);
}
