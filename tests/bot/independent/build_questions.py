# Builds questions.yaml from hand-written lists below (written from the intent list only).
import yaml, collections

Q = {}
Q["greeting"] = (
 ["你好", "在吗", "在不在呀亲", "哈喽～", "您好，有人吗？", "亲在吗😊", "嗨", "有人在吗", "早上好",
  "喂喂 有人没", "hello 亲", "妳好，請問有人在嗎", "在嘛在嘛", "nihao", "晚上好呀", "你号"],
 ["hi", "hello there", "hey anyone here?", "good morning", "hiii 👋", "yo is anybody there", "helo"])
Q["thanks"] = (
 ["谢谢", "谢谢亲", "好的谢谢", "多谢多谢", "明白了，谢谢啦", "3q", "感谢🙏", "好的没问题了",
  "谢谢宝", "谢啦", "知道了 辛苦了", "好嘞 没别的事了", "没事了 谢谢", "謝謝你", "好的好的 麻烦你了", "xiexie"],
 ["thanks", "thank u", "ok got it thx", "ty so much", "cool thats all i needed", "perfect thanks a lot", "thx 👍"])
Q["shipping_time"] = (
 ["什么时候发货", "几天能发或啊", "我昨天下的单怎么还没发货", "fahuo了吗", "下单后多久发货呀亲",
  "今天拍的今天能发吗", "预售的款啥时候发", "能不能快点发货 急用", "幾時出貨？", "发货要几天",
  "我买的裙子还在仓库吗 什么时候寄出", "周末发货吗", "宝 下午4点前下单当天发吗", "一直显示待发货，啥时候发",
  "什么时候能发出来😭",
  "亲我是上周五拍的那件风衣 当时说48小时内发货 现在都周三了还是显示待发货 我周末要出差穿的 到底什么时候能发出去啊"],
 ["when will my order ship", "how long until dispatch?", "has my order shipped yet? it still says processing",
  "when do u send out orders", "do you ship on weekends", "ordered yesterday, when will it be dispatched",
  "shiping time?"])
Q["order_status"] = (
 ["我的快递到哪了", "查一下物流", "快递怎么三天没更新了", "发货好几天了物流一直没动静", "包裹到哪儿了",
  "wuliu怎么查", "物流信息怎么一直停在杭州", "快递员什么时候送到", "能把快递单号发我一下吗",
  "包裹到哪了亲 明天能到吗", "物流顯示運輸中 什麼時候到", "查快递", "已经发货了怎么查不到物流信息",
  "派送中好久了📦还没送来", "我的货到哪里le", 
  "我妈帮我买的那双鞋说是已经发出了 但是我在app里看物流一直停在转运中心 三天没更新了 能帮忙看看现在到哪了吗"],
 ["where is my package", "tracking number pls", "my parcel hasnt moved in 4 days", "can u check my order status",
  "wheres my stuff? it shipped monday", "how do i track my order", "is my delivery coming today"])
Q["shipping_fee"] = (
 ["运费多少", "包邮吗", "满多少包邮", "新疆包邮吗", "偏远地区运费怎么算", "邮费谁出", "为什么还要收运费",
  "亲 买两件包邮不", "发顺丰要加钱吗", "寄到西藏要多少邮费", "youfei多少", "郵費怎麼算", "还差几块包邮啊",
  "寄香港运费多少", "这个是包邮的吧😂", "满99包有吗"],
 ["how much is shipping", "is shipping free?", "free shipping over how much", "shipping fee to xinjiang?",
  "do u charge postage for remote areas", "delivery cost pls", "why am i paying shipping on a 200 yuan order"])
Q["coupons"] = (
 ["有优惠券吗", "优惠卷怎么用", "为什么我的券用不了", "满减活动还有吗", "新人券在哪领", "有没有折扣",
  "双十一有什么活动", "这个券显示不可用是怎么回事", "有优惠码吗", "领了券结算的时候没减",
  "youhuiquan过期了还能用吗", "店鋪有折扣碼嗎", "两张券能叠加吗", "宝 有没有无门槛券🎫", "关注店铺送券吗",
  "满300减30的券怎么没生效 我都买了320了"],
 ["any coupons?", "my coupon code isnt working", "how do i use a voucher", "r there any discounts rn",
  "promo code pls", "can i stack 2 coupons", "is there a sale this weekend"])
Q["returns"] = (
 ["退货", "我想退货", "怎么退货", "支持七天无理由退货吗", "不喜欢可以退吗", "退货地址是多少",
  "吊牌剪了还能退吗", "tuihuo怎么弄", "退貨流程是什麼", "买错了想退回去", "退货要自己寄吗", "超过七天还能退吗",
  "宝 这个能退不😢", "拆了包装还能退货吗", "退货申请在哪里提交",
  "买的连衣裙到了试了一下 颜色跟图片差好多 也不太适合我 吊牌都还在没洗过 想问下怎么退回去"],
 ["i want to return this", "how do i send it back", "return policy?", "can i return if i dont like it",
  "returns address pls", "is it 7 day no reason return?", "wanna return my jeans how"])
Q["exchanges"] = (
 ["能换货吗", "我想换个大一码的", "尺码小了能换吗", "换个颜色可以吗", "换货怎么操作", "买了M想换L", "huanhuo",
  "換貨要多久", "颜色不喜欢 换个黑色行不", "可以换尺码吗亲", "鞋子挤脚想换大半码", "换货是先寄回来吗",
  "穿着有点紧 能换大一号吗", "我要换货", "同款换别的颜色要补差价吗", "换个size"],
 ["can i exchange for a bigger size", "want to swap the colour", "exchange M for L pls", "how do exchanges work",
  "too small, can i change it for a 40", "can i exchange this for the black one", "exchnage size?"])
Q["refund_status"] = (
 ["退款什么时候到账", "我的退款呢", "tuikuan还没到", "退款进度怎么查", "退宽多久到",
  "退款显示成功但没收到钱", "多久能退款", "钱退到哪里了", "退款怎么还没到😤", "退款處理中 要多久",
  "商家已经收到退货了什么时候退钱", "取消订单的钱什么时候退回来", "宝 我的退款审核通过了吗", "退款到账要几天",
  "钱啥时候退给我",
  "我上个礼拜就把裤子寄回去了 单号也填了 你们仓库也签收了 但是退款一直显示处理中 钱到底什么时候能回来啊"],
 ["when will i get my refund", "refund status?", "still havent got my money back for the return",
  "how long does refund take", "refund says completed but nothing in my account", "where is my refund",
  "any update on my refund?"])
Q["size_guide"] = (
 ["我穿什么码", "160 100斤穿什么码", "这个偏大还是偏小", "这个size偏大吗", "尺码表在哪", "175 140斤选L还是XL",
  "平时穿M这个要买什么码", "鞋码正吗", "腰围2尺1穿几码", "宝 我165 52kg 建议拿哪个码", "chima怎么选",
  "尺碼推薦一下", "胸围90选哪个号", "我老公180 170斤 买多大", "偏瘦 穿S会不会大👗", "尺马准不准"],
 ["what size should i get", "im 170cm 60kg which size", "does it run small?", "size chart pls",
  "is it true to size", "between M and L which one for 65kg", "US size 8, what is that here"])
Q["invoices"] = (
 ["能开发票吗", "发票怎么开", "我要增值税专用发票", "可以开公司抬头吗", "电子发票在哪下载", "发票抬头写错了能改吗",
  "fapiao", "可以開發票嗎", "能开专票吗", "发票什么时候开", "发票随货寄吗", "公司报销要发票 怎么弄",
  "税号填哪里", "宝 能补开发票吗", "有纸质发票吗", "开个人抬头的发票"],
 ["can i get an invoice", "need a fapiao for my company", "vat invoice possible?", "how to download e-invoice",
  "invoice with company name pls", "need a receipt for reimbursement", "can u reissue the invoice with our tax id"])
Q["payment_methods"] = (
 ["可以用支付宝吗", "能微信支付吗", "支持货到付款吗", "可以分期吗", "花呗能用吗", "信用卡可以付吗", "怎么付款",
  "有没有货到付款😅", "zhifubao能付吗", "可以用銀聯卡嗎", "支持白条吗", "付款方式有哪些", "花呗分期免息吗",
  "能用visa卡吗", "找朋友代付可以吗", "能先收货再付钱吗"],
 ["can i pay with paypal", "do u take alipay", "wechat pay ok?", "cash on delivery available?",
  "can i pay in installments", "visa/mastercard accepted?", "payment options?"])
Q["modify_address"] = (
 ["地址填错了", "改地址", "能帮我改一下收货地址吗", "电话号码写错了", "收件人名字要改", "还没发货能改地址吗",
  "地址能改成公司的吗", "gai地址", "我搬家了 订单地址要换", "修改收貨地址", "手机号少打了一位 怎么改",
  "宝 地址选错区了😭", "能改成寄到我妈家吗", "下单时地址写的旧的", "门牌号写错了 能改吗", "更换收货人电话"],
 ["need to change my delivery address", "wrong address on my order", "can u update my phone number",
  "change shipping addr pls", "i moved, can i change the address", "typo in my address",
  "can i send it to my office instead"])
Q["cancel_order"] = (
 ["取消订单", "我不要了 帮我取消", "怎么取消订单", "拍错了能取消吗", "订单取消一下", "买重复了取消一个",
  "quxiao订单", "取消訂單", "还没发货可以取消吗", "不想要了能取消不", "下错单了 撤销一下",
  "能不能把那个订单取消了", "宝 我想取消刚刚那单", "已经付款了还能取消吗", "误拍了两件 取消一件",
  "等不及了 直接取消吧"],
 ["cancel my order pls", "how do i cancel", "ordered wrong item want to cancel", "can i still cancel before it ships",
  "pls cancel order 12345", "i dont want it anymore cancel it", "cancle order"])
Q["authenticity"] = (
 ["是正品吗", "保真吗", "是不是假货", "正品吗亲", "有防伪码吗", "怎么这么便宜 是真的吗", "专柜同款吗",
  "假一赔十吗", "zhengpin吗", "是正品嗎", "和官网卖的一样吗", "是原单还是高仿", "有没有品牌授权书",
  "可以拿去专柜验吗", "宝 保证正品吗😂", "鞋子怎么辨别真假"],
 ["is this authentic", "is it original or fake", "r these genuine nikes", "any certificate of authenticity",
  "is this a replica?", "legit or counterfeit?", "same as the official store?"])
Q["warranty"] = (
 ["保修多久", "穿了一个月开胶了怎么办", "拉链坏了能修吗", "质量问题能保修吗", "包包用了两个月带子断了",
  "有售后保修吗", "手表保修期多长", "鞋底断了可以免费修吗", "保固多久", "baoxiu怎么弄",
  "衣服穿了几次就脱线了", "过了退货期坏了怎么办", "有维修服务吗", "宝 这个保修一年吗",
  "羽绒服穿了半个月跑绒严重", "保休期过了还能修不"],
 ["whats the warranty", "zipper broke after 2 weeks", "can u repair my bag", "sole came off after a month",
  "is there a warranty on the watch", "quality issue after some use what do i do", "repair service?"])
Q["membership_points"] = (
 ["积分怎么用", "我有多少积分", "积分能抵现吗", "会员等级怎么升", "vip有什么好处", "积分兑换在哪",
  "积分过期了吗", "怎么成为会员", "jifen", "會員積分怎麼查", "积分怎么赚", "金卡会员有什么福利",
  "购物送积分吗", "宝 积分能换什么🎁", "退货了积分会扣吗", "签到积分在哪"],
 ["how do i use my points", "how many points do i have", "how to become vip member", "membership levels?",
  "redeem points for discount?", "do points expire", "member perks?"])
Q["complaint"] = (
 ["我要投诉", "投诉你们客服", "你们服务太差了我要投诉", "快递员态度恶劣 我要投诉", "我要给差评并投诉",
  "这是什么垃圾质量 我要投诉", "卖假货我要去12315举报", "投訴", "tousu", "我要投诉你们店",
  "发错货三次了 我要投诉", "客服态度太差了，必须给个说法", "我要举报这个商家", "怎么投诉", "你们这样欺骗消费者 我要曝光",
  "投诉渠道在哪"],
 ["i want to file a complaint", "terrible service i wanna complain", "how do i make a complaint",
  "your courier was rude, complaint", "im reporting u to consumer protection", "worst shop ever, filing a complaint",
  "complain about ur staff"])
Q["product_question"] = (
 ["这件是什么面料", "纯棉的吗", "能机洗吗", "起球吗", "会掉色吗", "厚不厚", "冬天穿冷不冷", "有没有黑色",
  "M码还有货吗", "这个多少钱", "盒子里有什么", "透不透", "這件是羊毛的嗎", "mianliao是什么",
  "宝 这个颜色实物和图片一样吗📷", "送腰带吗还是要单独买"],
 ["what material is this", "is it cotton?", "machine washable?", "does it come in blue", "is size L in stock",
  "hows the thickness", "whats in the box"])
Q["human"] = (
 ["转人工", "人工客服", "我要找真人", "能不能让人工来", "不要机器人", "rengong", "轉人工", "叫个活人来",
  "找你们客服主管", "我要跟人说话", "人工人工人工", "有真人客服吗", "请转接人工服务", "机器人听不懂 给我换人",
  "宝 帮我转个人工😊", "转人工！"],
 ["talk to a human", "real person pls", "agent", "i want to speak to someone", "connect me to a customer service rep",
  "no bot pls, human", "live agent"])
Q["out_of_scope"] = (
 ["今天天气怎么样", "讲个笑话", "你是男的女的", "帮我写作业", "明天股票会涨吗", "附近有什么好吃的",
  "1+1等于几", "你喜欢吃什么", "推荐个电影", "北京到上海高铁几点", "你会唱歌吗", "帮我算个命", "今天星期几",
  "世界杯谁赢了", "红烧肉怎么做", "給我講個故事"],
 ["whats the weather tomorrow", "tell me a joke", "who won the game last night", "can u do my homework",
  "recommend a movie", "whats the bitcoin price", "how do i cook rice"])

items = []
for intent, (zh, en) in Q.items():
    assert len(zh) == 16 and len(en) == 7, (intent, len(zh), len(en))
    for t in zh: items.append({"text": t, "lang": "zh", "intent": intent})
    for t in en: items.append({"text": t, "lang": "en", "intent": intent})
texts = [i["text"] for i in items]
dups = [t for t, c in collections.Counter(texts).items() if c > 1]
assert not dups, dups
with open("/work/evalset/questions.yaml", "w", encoding="utf-8") as f:
    yaml.safe_dump(items, f, allow_unicode=True, sort_keys=False, width=1000)
print(len(items))
